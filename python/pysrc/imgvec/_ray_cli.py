"""``imgvec-ray``: distributed ingest and sharded search from the shell (imgvec.ray).

Without ``--address`` each command starts a local Ray cluster on this machine for its own
duration (``--num-cpus`` of it); ``--address auto`` (or host:port) joins a running one, e.g. one
started with ``ray start --head`` (docs/RAY.md)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any, Dict, List, Optional


def _connect(args: argparse.Namespace) -> None:
    import ray

    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="imgvec-ray", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", help="a running Ray cluster (auto, or host:port); default: start a local one")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local cluster (default: all)")
    sub = parser.add_subparsers(dest="command", required=True)
    ing = sub.add_parser("ingest", help="ingest images into N shard databases under OUT")
    ing.add_argument("paths", nargs="+", help="image files or folders (walked)")
    ing.add_argument("--out", required=True, help="the collection's folder (template, shards, manifest)")
    ing.add_argument("--shards", type=int, default=2)
    ing.add_argument("--pipeline", default=None, help="fast (default), balanced, robust, robust-vlad")
    ing.add_argument(
        "--model",
        default=None,
        help="a TorchScript extractor, or with --pipeline that preset's CNN replaced (imgvec train contrastive)",
    )
    ing.add_argument("--workers", type=int, default=None, help="extraction workers (default: the cluster's CPUs)")
    ing.add_argument("--sample", type=int, default=2048, help="images the whitening is learned on, once")
    ing.add_argument("--journal", default=None, help="append each acknowledged image's event here (JSON lines)")
    sea = sub.add_parser("search", help="search every shard of a collection as one database")
    sea.add_argument("out", help="the collection's folder")
    sea.add_argument("queries", nargs="+", help="image files")
    sea.add_argument("-k", type=int, default=10)
    sea.add_argument("--allow-partial", action="store_true", help="answer from the shards that open; say which did not")
    args = parser.parse_args(argv)

    import imgvec
    import imgvec.ray as iray

    _connect(args)
    try:
        if args.command == "ingest":
            report = iray.ingest(
                args.paths,
                args.out,
                shards=args.shards,
                pipeline=args.pipeline,
                model=args.model,
                workers=args.workers,
                sample=args.sample,
                journal=args.journal,
            )
            print(json.dumps(asdict(report), default=str))
            return 0 if report.errors == 0 else 1
        with iray.ShardedDatabase(args.out, allow_partial=args.allow_partial) as sharded:
            failed = False
            results = sharded.search(list(args.queries), k=args.k)
            assert isinstance(results, list)
            for r in results:
                line: Dict[str, Any] = {"query": r.query, "answered": r.answered, "missing": r.missing}
                if r.error is not None:
                    line["error"] = str(r.error)
                    failed = True
                else:
                    line["results"] = [asdict(h) for h in r.hits]
                print(json.dumps(line))
            return 1 if failed else 0
    except imgvec.Error as e:
        print(f"imgvec-ray: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
