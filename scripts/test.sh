#!/usr/bin/env bash
# Runs every test on the real stack (RocksDB, libtorch, FAISS, the default model), after making
# sure everything they need is installed. CI (.ci/run) calls exactly this.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
cd "$ROOT"
cargo fmt --all -- --check
cargo test --workspace --no-fail-fast
cargo clippy --workspace --all-targets -- -D warnings
# Every dependency's licence allows MIT OR Apache-2.0 and every crate comes from crates.io.
cargo deny check licenses bans sources
# The Python package (built into .venv by setup): pytest on the real engine, mypy, the notebook.
IMGVEC_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/imgvec" "$ROOT/.venv/bin/python" -m pytest -q "$ROOT/python/tests"
# The model conversion script's other architectures (EfficientNet-Lite, a user's ResNet-50).
/usr/bin/python3 "$ROOT/scripts/check_model_archs.py"
# The fuzz targets (their own workspace) must keep compiling against the crates they fuzz.
cargo check --manifest-path fuzz/Cargo.toml --bins
