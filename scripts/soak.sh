#!/usr/bin/env bash
# The long soaks, in release mode:
#   1. the SIGKILL crash harness of storage/tests/integration/kill.rs for CYCLES cycles (default
#      1000): prints the cycles run and the rows/deletes that survived;
#   2. reader processes beside a writer (cli/tests/cli/concurrency.rs) for READER_SECS seconds
#      (default 600): `imgvec search` and `imgvec info` in a loop while another process ingests,
#      deletes, compacts and retrains; prints the writer rounds, reader processes and failures.
# Usage: scripts/soak.sh [CYCLES] [READER_SECS]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
IMGVEC_KILL_CYCLES="${1:-1000}" cargo test --release -p imgvec-storage --test integration -- --nocapture --exact \
    kill::kill_at_random_moments_loses_nothing_acknowledged
IMGVEC_READER_SOAK_SECS="${2:-600}" cargo test --release -p imgvec-cli --test cli -- --nocapture --exact \
    concurrency::readers_never_fail_beside_a_writer
