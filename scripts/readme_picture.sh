#!/usr/bin/env bash
# Regenerates docs/img/contact-sheet.jpg, the README's picture: the sample photos ingested with
# `robust`, searched with the sample queries, the contact sheet rendered by headless Chromium
# (apt: chromium) and saved as JPEG (python3-pil). Run after ./scripts/setup.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
cargo build --release -q -p imgvec-cli
IMGVEC="${CARGO_TARGET_DIR:-$ROOT/target}/release/imgvec"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$IMGVEC" ingest "$WORK/robust.imgvec" sample/photos --pipeline robust
"$IMGVEC" search "$WORK/robust.imgvec" sample/queries -k 3 --html "$WORK/sheet.html"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=900,900 \
    --screenshot="$WORK/sheet.png" "file://$WORK/sheet.html" 2>/dev/null
mkdir -p docs/img
/usr/bin/python3 -c 'import sys; from PIL import Image; Image.open(sys.argv[1]).convert("RGB").save(sys.argv[2], quality=82, optimize=True)' \
    "$WORK/sheet.png" docs/img/contact-sheet.jpg
echo "wrote docs/img/contact-sheet.jpg"
