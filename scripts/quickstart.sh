#!/usr/bin/env bash
# Sets everything up, then runs the main job on the sample photos: ingest them into a database,
# search it with three altered query photos, print the results and write an HTML contact sheet.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
cd "$ROOT"
cargo build --release -q -p imgvec-cli
IMGVEC="${CARGO_TARGET_DIR:-$ROOT/target}/release/imgvec"
DB="${1:-$ROOT/sample/photos.imgvec}"
echo "== ingest sample/photos into $DB"
"$IMGVEC" ingest "$DB" sample/photos
echo "== search with sample/queries (a second viewpoint, a rotated crop, a small bright JPEG)"
"$IMGVEC" search "$DB" sample/queries/* -k 3 --html sample/results.html
