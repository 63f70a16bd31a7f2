#!/usr/bin/env bash
# The long crash soak: the SIGKILL harness of storage/tests/integration/kill.rs for many cycles (default
# 1000), in release mode. Prints the cycles run and the rows/deletes that survived.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
IMGVEC_KILL_CYCLES="${1:-1000}" cargo test --release -p imgvec-storage --test integration -- --nocapture --exact \
    kill::kill_at_random_moments_loses_nothing_acknowledged
