"""What Ray costs on one machine, in one run: ingest through imgvec.ray (N workers, S shards)
against a single-process ingest of the same files (with Ray shut down), and a sharded search
against one database holding the same rows (same learned state, same queries; the two searches
alternate per query).

    python python/benches/ray_overhead.py IMAGES QUERIES --pipeline fast --workers 2 --shards 2

Measure on the extension as users get it: ``(cd python && maturin develop --release)`` first
(``scripts/setup.sh`` builds it for the tests without ``--release``; the header says which ran).

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


def percentiles(times: List[float]) -> Dict[str, float]:
    """p50 and p99 of ``times`` (ms); NaN when there are none."""
    if not times:
        return {"p50": float("nan"), "p99": float("nan")}
    times = sorted(times)
    return {"p50": statistics.median(times), "p99": times[min(len(times) - 1, int(len(times) * 0.99))]}


def latencies(searches: Dict[str, Callable[[str], Any]], queries: List[str], rounds: int) -> Dict[str, List[float]]:
    """Each search's time for one query at a time, in ms, after one warm-up pass; the searches
    alternate per query, so a machine that slows down for a while slows them all alike."""
    for q in queries:
        for search in searches.values():
            search(q)
    times: Dict[str, List[float]] = {name: [] for name in searches}
    for _ in range(rounds):
        for q in queries:
            for name, search in searches.items():
                t = time.perf_counter()
                search(q)
                times[name].append((time.perf_counter() - t) * 1000)
    return times


def start_ray(workers: int) -> None:
    """A local Ray cluster of this machine's CPUs (at least ``workers``)."""
    ray.init(num_cpus=max(os.cpu_count() or 1, workers), include_dashboard=False, log_to_driver=False)


def ingest_rows(args: argparse.Namespace, work: Path, files: List[str], cpus: int) -> List[str]:
    """Ingests ``files`` through Ray and in one process (made like the Ray run's template, so
    both store the same rows and score them alike); the table's ingest rows."""
    report = iray.ingest(files, work / "sharded", shards=args.shards, pipeline=args.pipeline,
                         workers=args.workers, sample=args.sample)
    with imgvec.Database(work / "sharded" / "template", read_only=True) as template:
        one = template.create_like(work / "one", threads=cpus)
    # The single process runs alone: a Ray runtime left idle beside it took 5-25% of its rate
    # (fast, 11,684 images: 88.6-113.1 images/s beside it, 120.3 alone).
    ray.shutdown()
    t = time.perf_counter()
    summary = one.ingest(files, progress=False)
    single_s = time.perf_counter() - t
    one.close()
    start_ray(args.workers)
    assert summary.errors == report.errors == 0, (summary, report.failed[:3])
    single_rate = summary.stored / single_s
    ray_rate = report.stored / report.seconds
    # The sample's rows are made while learning the template and stored as they were.
    ray_rate_ex = (report.stored - report.from_sample) / (report.seconds - report.template_seconds)
    rows = [f"| ingest images/s, end to end | {single_rate:.1f} | {ray_rate:.1f} | {ray_rate / single_rate:.2f}× |",
            f"| ingest images/s, without learning the template ({report.template_seconds:.1f} s) "
            f"| {single_rate:.1f} | {ray_rate_ex:.1f} | {ray_rate_ex / single_rate:.2f}× |"]
    if args.dataset:
        dataset = ray.data.read_binary_files(args.images, include_paths=True)
        from_dataset = iray.ingest(dataset, work / "from-dataset", shards=args.shards, pipeline=args.pipeline,
                                   workers=args.workers, sample=args.sample)
        assert from_dataset.errors == 0, from_dataset.failed[:3]
        rate = from_dataset.stored / from_dataset.seconds
        rows.append(f"| ingest images/s from a Ray Dataset of bytes, end to end | {single_rate:.1f} | {rate:.1f} "
                    f"| {rate / single_rate:.2f}× |")
    return rows


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
    ap.add_argument("--search-only", action="store_true",
                    help="measure searches only, on the databases an earlier run left in --work")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="imgvec-ray-bench-"))
    files = sorted(str(p) for p in Path(args.images).rglob("*") if p.suffix.lower() in iray.IMAGE_EXTENSIONS)
    queries = sorted(str(p) for p in Path(args.queries).rglob("*") if p.suffix.lower() in iray.IMAGE_EXTENSIONS)
    cpus = os.cpu_count() or 1
    start_ray(args.workers)
    rows: List[str] = []
    if not args.search_only:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        rows += ingest_rows(args, work, files, cpus)
    with imgvec.Database(work / "one", read_only=True, threads=cpus) as one, \
            iray.ShardedDatabase(work / "sharded") as sharded:
        times = latencies({"one": lambda q: one.search(q, k=10), "sharded": lambda q: sharded.search(q, k=10)},
                          queries, args.rounds)
        # The upright fallback's queries: nothing verified upright, so they are searched again
        # with their turns (one database's answer upright, without the fallback, says which).
        retried = [not any(h.verdict == "verified" for h in one.search(q, k=10, upright=False)) for q in queries]
    build = "release build" if imgvec._imgvec.OPTIMIZED else (
        "DEV BUILD (maturin develop without --release: about twice as slow as `pip install ./python`)")
    print(f"{len(files)} images, {len(queries)} queries, pipeline {args.pipeline}, {cpus} cores, "
          f"Ray {ray.__version__}: {args.workers} workers, {args.shards} shards; extension: {build}\n")
    print("| | single process | Ray | Ray / single |")
    print("|---|---|---|---|")
    for row in rows:
        print(row)
    groups = [("", [True] * len(queries))]
    if any(retried) and not all(retried):
        groups += [(f", {len(queries) - sum(retried)} upright", [not r for r in retried]),
                   (f", {sum(retried)} retried with turns", retried)]
    for label, chosen in groups:
        picked = {name: percentiles([t for i, t in enumerate(ts) if chosen[i % len(queries)]])
                  for name, ts in times.items()}
        for p in ("p50", "p99"):
            single, shard = picked["one"][p], picked["sharded"][p]
            print(f"| search {p} ms{label} | {single:.1f} | {shard:.1f} | {shard - single:+.1f} ms |")
    ray.shutdown()


if __name__ == "__main__":
    main()
