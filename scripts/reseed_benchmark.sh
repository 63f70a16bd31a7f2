#!/usr/bin/env bash
# Builds a second benchmark from instances-dev's own photos with another seed: the same base
# photos (g0000.jpg … g0048.jpg, not their siblings) and distractors (d*.jpg), but new crops,
# turns, exposures, occlusions, reverse crops and near-identical siblings
# (../shared/bench/make_benchmark.py). Figures tuned on instances-dev should hold on it; the
# benchmarks the project is judged on are other draws of the same cases.
#
#   ./scripts/reseed_benchmark.sh [SEED] [OUT_DIR]        (default: 11, /tmp/imgvec-reseed-SEED)
#   ./scripts/preset_table.sh OUT_DIR docs/RESULTS-reseed.md   # then measure every preset on it
#
# Needs Debian's python3-pil and numpy (/usr/bin/python3, installed by scripts/setup.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SEED="${1:-11}"
OUT="${2:-/tmp/imgvec-reseed-$SEED}"
SHARED="$ROOT/../shared"
[ -d "$SHARED/datasets" ] || SHARED=/work/shared
DEV="$SHARED/datasets/instances-dev"
BASES=$(mktemp -d)
trap 'rm -rf "$BASES"' EXIT
# Base photos only: a sibling (gNNNN_sibK.jpg) is a derived image, not a photo.
find "$DEV/db" -maxdepth 1 -name 'g[0-9][0-9][0-9][0-9].jpg' -exec cp {} "$BASES/" \;
rm -rf "$OUT"
/usr/bin/python3 "$SHARED/bench/make_benchmark.py" --base "$BASES" \
    --distractors "$DEV"/db/d*.jpg --out "$OUT" --seed "$SEED" >&2
echo "$OUT"
