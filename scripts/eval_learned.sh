#!/usr/bin/env bash
# Trains the learned extractors of issue #7 on digits-dev and prints the comparison table:
# raw pixels, autoencoder (32-d), supervised-100 and SGAN-100 (the first 10 db images of each
# class, in db.jsonl order, are the only labels), each with exact search and with Hamming codes
# (256 bits, no re-rank), measured in-process by `imgvec bench retrieval`.
#
#   scripts/eval_learned.sh [DIGITS_DIR] [WORK_DIR]
# Takes ~20 minutes on 2 cores (SGAN: 50 epochs). Needs ./scripts/setup.sh and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
DIGITS=$(realpath "${1:-../shared/datasets/digits-dev}")
WORK=${2:-$(mktemp -d)}
mkdir -p "$WORK"
IMGVEC="${CARGO_TARGET_DIR:-./target}/release/imgvec"
[ -x "$IMGVEC" ] || cargo build --release -p imgvec-cli

# Labels: the first 10 db images of each class.
/usr/bin/python3 - "$DIGITS" "$WORK/labels100.jsonl" <<'EOF'
import json, sys, collections
digits, out = sys.argv[1], sys.argv[2]
seen, lines = collections.Counter(), []
for line in open(f"{digits}/db.jsonl"):
    e = json.loads(line)
    if seen[e["label"]] < 10:
        seen[e["label"]] += 1
        lines.append(json.dumps({"path": f"{digits}/{e['path']}", "label": e["label"]}))
open(out, "w").write("\n".join(lines) + "\n")
EOF

# Raw pixels: a TorchScript model that flattens the grey 20x20 image (400 values).
/usr/bin/python3 - "$WORK/raw20.pt" <<'EOF'
import sys, torch
class Raw(torch.nn.Module):
    def forward(self, x):
        return x.mean(1).flatten(1)
torch.jit.trace(Raw(), torch.rand(2, 3, 20, 20)).save(sys.argv[1])
EOF

train() { # name, then imgvec train arguments; prints seconds
    local start end
    start=$(date +%s.%N)
    "$IMGVEC" train "${@:2}" >"$WORK/$1.log" 2>&1
    end=$(date +%s.%N)
    printf "%.1f" "$(echo "$end - $start" | bc)"
}
T_AE=$(train ae autoencoder "$DIGITS/db" --out "$WORK/ae.pt" --code-dim 32 --epochs 20 --seed 0)
T_SUP=$(train sup sgan "$DIGITS/db" --labels "$WORK/labels100.jsonl" --out "$WORK/sup.pt" \
    --supervised --epochs 30 --rotate 12 --shift 0.08 --seed 0)
T_SGAN=$(train sgan sgan "$DIGITS/db" --labels "$WORK/labels100.jsonl" --out "$WORK/sgan.pt" \
    --epochs 50 --rotate 12 --shift 0.08 --seed 0)

row() { # label, model, size, train seconds
    local e h
    e=$("$IMGVEC" --bits 256 bench retrieval "$DIGITS" --model "$2" --model-size "$3" --mode exact --json)
    h=$("$IMGVEC" --bits 256 bench retrieval "$DIGITS" --model "$2" --model-size "$3" --mode hamming --no-rerank --json)
    /usr/bin/python3 - "$1" "$4" "$e" "$h" <<'EOF'
import json, sys
label, secs, e, h = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
def m(r, mode):
    return next(x for x in r["modes"] if x["mode"] == mode)
ex, hm = m(e, "exact"), m(h, "hamming")
print(f"| {label} | {secs} | {ex['overall']['recall_at_1']:.3f} | {ex['overall']['map_at_10']:.3f} | {ex['latency_p50_ms']:.2f} "
      f"| {hm['overall']['recall_at_1']:.3f} | {hm['overall']['map_at_10']:.3f} | {hm['latency_p50_ms']:.2f} |")
EOF
}
echo "| features | train s | exact P@1 | exact mAP@10 | exact p50 ms | Hamming-256 P@1 | Hamming-256 mAP@10 | Hamming p50 ms |"
echo "|---|---|---|---|---|---|---|---|"
row "raw pixels (400)" "$WORK/raw20.pt" 20 0
row "autoencoder (32)" "$WORK/ae.pt" 28 "$T_AE"
row "supervised-100 (128)" "$WORK/sup.pt" 28 "$T_SUP"
row "SGAN-100 (128)" "$WORK/sgan.pt" 28 "$T_SGAN"
echo "models and logs in $WORK"
