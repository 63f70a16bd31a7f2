#!/usr/bin/env python3
"""The Python binding's per-call overhead: one batch of searches timed through `import imgvec`
and through the Rust API (the `search_batch` example, same database, queries, k and repeats),
in one run, alternating so drift hits both alike.

  python python/benches/overhead.py DB QUERY_FOLDER [--k 10] [--repeats 10] [--rust BIN]

Prints the median (and fastest) ms per batch for each and Python's overhead in percent. The
Rust side is `cargo build --release -p imgvec --example search_batch`.
"""

import argparse
import json
import os
import statistics
import subprocess
import time

import imgvec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("queries")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rust", required=True, help="the search_batch example binary")
    a = ap.parse_args()
    queries = sorted(os.path.join(a.queries, f) for f in os.listdir(a.queries))
    py_ms, rust_ms = [], []
    with imgvec.Database(a.db, read_only=True) as db:
        db.search(queries, k=a.k)  # warm-up: model, derived files
        for _ in range(a.rounds):
            for _ in range(a.repeats):
                t = time.perf_counter()
                results = db.search(queries, k=a.k)
                py_ms.append((time.perf_counter() - t) * 1000)
                assert all(r.error is None for r in results)
            out = subprocess.run(
                [a.rust, a.db, str(a.k), str(a.repeats), *queries], check=True, capture_output=True, text=True
            )
            rust_ms += json.loads(out.stdout)["ms_per_batch"]
    py, rust = statistics.median(py_ms), statistics.median(rust_ms)
    print(json.dumps({
        "queries": len(queries), "k": a.k, "batches": len(py_ms),
        "python_ms_median": round(py, 2), "rust_ms_median": round(rust, 2),
        "overhead_percent": round(100 * (py - rust) / rust, 2),
        "python_ms_min": round(min(py_ms), 2), "rust_ms_min": round(min(rust_ms), 2),
        # A dev build (maturin develop without --release) against a release example is no
        # comparison of the binding.
        "extension_optimized": imgvec._imgvec.OPTIMIZED,
    }))


if __name__ == "__main__":
    main()
