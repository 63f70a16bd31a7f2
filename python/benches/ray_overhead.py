"""What Ray costs on one machine, in one run: ingest through imgvec.ray (N workers, S shards)
against a single-process ingest of the same files, and a sharded search against one database
holding the same rows (same learned state, same queries).

    python python/benches/ray_overhead.py IMAGES QUERIES --pipeline fast --workers 2 --shards 2

IMAGES: a folder of images to ingest; QUERIES: a folder of query images. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import ray

import imgvec
import imgvec.ray as iray


def latencies(search: Callable[[str], Any], queries: List[str], rounds: int) -> Dict[str, float]:
    """p50 and p99 of one query at a time, in ms, after one warm-up pass."""
    for q in queries:
        search(q)
    times = []
    for _ in range(rounds):
        for q in queries:
            t = time.perf_counter()
            search(q)
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"p50": statistics.median(times), "p99": times[min(len(times) - 1, int(len(times) * 0.99))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images")
    ap.add_argument("queries")
    ap.add_argument("--pipeline", default="fast")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--sample", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dataset", action="store_true",
                    help="also ingest the images as a Ray Dataset of bytes (read_binary_files)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="imgvec-ray-bench-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = sorted(str(p) for p in Path(args.images).rglob("*") if p.suffix.lower() in iray.IMAGE_EXTENSIONS)
    queries = sorted(str(p) for p in Path(args.queries).rglob("*") if p.suffix.lower() in iray.IMAGE_EXTENSIONS)
    cpus = os.cpu_count() or 1
    ray.init(num_cpus=max(cpus, args.workers), include_dashboard=False, log_to_driver=False)

    # Ray first: its template is the learned state the single database is made like, so both
    # store the same rows and score them alike.
    report = iray.ingest(files, work / "sharded", shards=args.shards, pipeline=args.pipeline,
                         workers=args.workers, sample=args.sample)
    with imgvec.Database(work / "sharded" / "template", read_only=True) as template:
        one = template.create_like(work / "one", threads=cpus)
    t = time.perf_counter()
    summary = one.ingest(files, progress=False)
    single_s = time.perf_counter() - t
    assert summary.errors == report.errors == 0, (summary, report.failed[:3])

    single_rate = summary.stored / single_s
    ray_rate = report.stored / report.seconds
    ray_rate_ex = report.stored / (report.seconds - report.template_seconds)
    one.close()
    if args.dataset:
        dataset = ray.data.read_binary_files(args.images, include_paths=True)
        from_dataset = iray.ingest(dataset, work / "from-dataset", shards=args.shards, pipeline=args.pipeline,
                                   workers=args.workers, sample=args.sample)
        assert from_dataset.errors == 0, from_dataset.failed[:3]
    with imgvec.Database(work / "one", read_only=True, threads=cpus) as one, \
            iray.ShardedDatabase(work / "sharded") as sharded:
        single_lat = latencies(lambda q: one.search(q, k=10), queries, args.rounds)
        sharded_lat = latencies(lambda q: sharded.search(q, k=10), queries, args.rounds)

    print(f"{len(files)} images, {len(queries)} queries, pipeline {args.pipeline}, {cpus} cores, "
          f"Ray {ray.__version__}: {args.workers} workers, {args.shards} shards\n")
    print("| | single process | Ray | Ray / single |")
    print("|---|---|---|---|")
    print(f"| ingest images/s, end to end | {single_rate:.1f} | {ray_rate:.1f} | {ray_rate / single_rate:.2f}× |")
    print(f"| ingest images/s, without learning the template ({report.template_seconds:.1f} s) "
          f"| {single_rate:.1f} | {ray_rate_ex:.1f} | {ray_rate_ex / single_rate:.2f}× |")
    if args.dataset:
        rate = from_dataset.stored / from_dataset.seconds
        print(f"| ingest images/s from a Ray Dataset of bytes, end to end | {single_rate:.1f} | {rate:.1f} "
              f"| {rate / single_rate:.2f}× |")
    print(f"| search p50 ms | {single_lat['p50']:.1f} | {sharded_lat['p50']:.1f} | "
          f"+{sharded_lat['p50'] - single_lat['p50']:.1f} ms |")
    print(f"| search p99 ms | {single_lat['p99']:.1f} | {sharded_lat['p99']:.1f} | "
          f"+{sharded_lat['p99'] - single_lat['p99']:.1f} ms |")
    ray.shutdown()


if __name__ == "__main__":
    main()
