#!/usr/bin/env bash
# Dedupe at scale (#19): the dedupe ground truth of scripts/dedupe_eval.py (instances-dev and its
# copies) buried in N photo-like distractors (make_distractors.py), ingested with the release CLI,
# then `imgvec dedupe --json` timed (wall, peak RSS) and scored (copy-pair precision / recall).
#
#   ./scripts/dedupe_scale.sh [N=100000] [WORK=/tmp/imgvec-dedupe-N] [PRESET=fast]
#
# WORK keeps the distractors, the database and the reports, so a second run reuses them. Measured
# figures: docs/DEDUPE.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-100000}
WORK=${2:-/tmp/imgvec-dedupe-$N}
PRESET=${3:-fast}
BIN=${IMGVEC_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/imgvec}
PY=${PYTHON:-$ROOT/.venv/bin/python}
SHARED="$ROOT/../shared"
mkdir -p "$WORK/bin"
# A copy of the binaries, so a rebuild during the run does not change what is measured.
cp "$BIN" "$(dirname "$BIN")/imgvec-engine" "$WORK/bin/"
BIN="$WORK/bin/imgvec"
[ -f "$WORK/truth/truth.json" ] || "$PY" "$ROOT/scripts/dedupe_eval.py" make "$SHARED/datasets/instances-dev" "$WORK/truth"
if [ ! -d "$WORK/distractors" ]; then
  "$PY" "$SHARED/bench/make_distractors.py" "$SHARED/datasets/distractors-imagenet-1k" "$WORK/distractors.tmp" "$N"
  mv "$WORK/distractors.tmp" "$WORK/distractors"
fi
DB="$WORK/$PRESET.imgvec"
if [ ! -d "$DB" ]; then
  start=$(date +%s.%N)
  "$BIN" -q ingest "$DB" "$WORK/truth/images" "$WORK/distractors" --pipeline "$PRESET"
  echo "ingest: $(echo "$(date +%s.%N) - $start" | bc) s" | tee "$WORK/ingest-$PRESET.txt"
fi
/usr/bin/time -v "$BIN" -q dedupe "$DB" --json > "$WORK/dedupe-$PRESET.json" 2> "$WORK/dedupe-$PRESET.time"
grep -E 'Elapsed|Maximum resident' "$WORK/dedupe-$PRESET.time"
"$PY" "$ROOT/scripts/dedupe_eval.py" score "$WORK/truth" "$WORK/dedupe-$PRESET.json"
