#!/usr/bin/env python3
"""Dedupe precision and recall on a ground truth built from a benchmark folder.

    scripts/dedupe_eval.py make BENCH OUT        # OUT/images + OUT/truth.json
    scripts/dedupe_eval.py score OUT REPORT.json # precision/recall of `imgvec dedupe --json`

The ground truth: every db image of BENCH (instances-dev by default), plus the queries of the
cases that are copies of one stored photo — `jpeg` (heavy re-encode), `scale`, `brightness` and
`near_duplicate` — named after their group. Two images are duplicates when they share a group
(a query and its source; the near-identical siblings of one source), and so are byte-identical
files. Pairs are scored after grouping (every pair inside a reported group counts), on the pairs
with an added copy (exact), and on all pairs (precision there is a lower bound: the db images hold
unlabelled near-duplicates of each other)."""

import hashlib
import itertools
import json
import shutil
import sys
from pathlib import Path

CASES = {"jpeg", "scale", "brightness", "near_duplicate"}


def group_of(label: str) -> str:
    return label.split("_")[0]


def make(bench: Path, out: Path) -> None:
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    groups = {}
    for line in (bench / "db.jsonl").read_text().splitlines():
        row = json.loads(line)
        name = Path(row["path"]).name
        shutil.copy(bench / row["path"], images / name)
        groups[name] = group_of(row["label"])
    for line in (bench / "queries.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["case"] in CASES:
            name = "q_" + Path(row["path"]).name
            shutil.copy(bench / row["path"], images / name)
            groups[name] = group_of(row["label"])
    # Byte-identical files are duplicates whatever their labels say.
    first = {}
    for name in sorted(groups):
        digest = hashlib.sha256((images / name).read_bytes()).hexdigest()
        if digest in first:
            groups[name] = groups[first[digest]]
        else:
            first[digest] = name
    (out / "truth.json").write_text(json.dumps(groups, indent=0))
    print(f"{len(groups)} images in {images}")


def pairs_of(groups):
    out = set()
    for members in groups:
        out.update(itertools.combinations(sorted(members), 2))
    return out


def score(out: Path, report: Path) -> dict:
    truth = json.loads((out / "truth.json").read_text())
    by_group = {}
    for name, g in truth.items():
        by_group.setdefault(g, []).append(name)
    true_pairs = pairs_of(v for v in by_group.values() if len(v) > 1)
    rep = json.loads(report.read_text())
    found = pairs_of([Path(m["path"]).name for m in g["members"]] for g in rep["groups"])
    hit = len(found & true_pairs)
    # The benchmark's own db images hold unlabelled near-duplicates (the same photo with another
    # caption, figure variants), so pairs among them are not all known; pairs with an added
    # copy (`q_`) are: its source (and the source's siblings), nothing else.
    def copies(pairs):
        return {p for p in pairs if p[0].startswith("q_") or p[1].startswith("q_")}
    found_q, true_q = copies(found), copies(true_pairs)
    hit_q = len(found_q & true_q)
    result = {
        "images": rep["rows"], "min_score": rep["min_score"], "seconds": round(rep["seconds"], 2),
        "copy_pairs": len(true_q), "copy_precision": round(hit_q / max(1, len(found_q)), 4),
        "copy_recall": round(hit_q / max(1, len(true_q)), 4),
        "all_pairs": len(true_pairs), "found_pairs": len(found),
        "all_precision_lower_bound": round(hit / max(1, len(found)), 4),
        "all_recall": round(hit / max(1, len(true_pairs)), 4),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        score(Path(sys.argv[2]), Path(sys.argv[3]))
