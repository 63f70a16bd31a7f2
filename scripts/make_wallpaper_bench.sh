#!/usr/bin/env bash
# Builds a benchmark of real light/dark siblings: the light and dark renderings of GNOME's
# wallpapers (Debian package gnome-backgrounds, fetched with apt-get download, not installed)
# as base photos of ../shared/bench/make_benchmark.py, each with the usual hard-case queries,
# among distractors. A query of one rendering must find that rendering, not its sibling
# (docs/SEARCH.md, Ranking).
#
#   ./scripts/make_wallpaper_bench.sh OUT [SEED] [DISTRACTORS]
#
# DISTRACTORS: how many of ../shared/datasets/distractors-imagenet-1k (default 150).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:?usage: make_wallpaper_bench.sh OUT [SEED] [DISTRACTORS]}
SEED=${2:-1}
N=${3:-150}
PY="$ROOT/.venv/bin/python" # Pillow and numpy (scripts/setup.sh)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && apt-get download gnome-backgrounds >/dev/null)
dpkg-deb -x "$WORK"/gnome-backgrounds_*.deb "$WORK/pkg"
mkdir -p "$WORK/base" "$WORK/distractors"
# Only the raster pairs (NAME-l / NAME-d); make_benchmark drops the near-flat ones.
cp "$WORK"/pkg/usr/share/backgrounds/gnome/*-[ld].webp "$WORK/base/"
mapfile -t photos < <(find "$ROOT/../shared/datasets/distractors-imagenet-1k" -type f | sort)
for f in "${photos[@]:0:$N}"; do ln -s "$f" "$WORK/distractors/"; done
"$PY" "$ROOT/../shared/bench/make_benchmark.py" --base "$WORK/base" \
    --distractors "$WORK/distractors" --out "$OUT" --seed "$SEED" \
    --near-dup-frac 0 --reverse-crop-frac 0 >/dev/null
echo "$OUT: $(wc -l <"$OUT/db.jsonl") db images, $(wc -l <"$OUT/queries.jsonl") queries"
