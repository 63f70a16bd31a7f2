#!/usr/bin/env python3
"""Calibrates each preset's answer to "is this the same image?" on the dev benchmarks.

  scripts/calibrate.py [--presets fast,balanced,robust,robust-vlad] [--work DIR] [--out FILE]

For each preset it ingests instances-dev and holidays-dev (one database each), searches them
with their own queries plus photos that are in neither (distractors-imagenet-1k, so that "not in
the collection" is measured too) with the preset's default search options, and labels each of the
top 10 hits: the same source as the query (same label in db.jsonl) or not. From those labels:

- `verified`: the share of same-source hits among SIFT-verified hits;
- `aligned`: confidence as a function of the dense alignment (NCC) for aligned hits, fitted by
  isotonic regression (unrelated real photos align well too, so one share would mislead);
- `unchecked`: confidence as a function of the score for hits nobody verified (every hit of a
  preset without local features; robust with `--verify 0`), fitted by isotonic regression;
- `unverified`: the same for hits verification checked and did not confirm (robust).

Fitted shares are shrunk towards 1/2 by one pseudo-observation (n hits with p same-source give
(p + 0.5) / (n + 1)), so a small block never claims 0 or 1. The result is the JSON the engine
embeds (engine/src/pipeline/calibration.json); docs/CALIBRATION.md shows the tables this prints.
"""
import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
DATASETS = ["instances-dev", "holidays-dev"]
K = 10
# Photos of things in neither benchmark, used as queries whose every hit is a different source.
OUTSIDERS = 150


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def imgvec():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.environ.get("IMGVEC_BIN", os.path.join(target, "release", "imgvec"))


def outsider_paths(n):
    folder = os.path.join(SHARED, "datasets", "distractors-imagenet-1k")
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    return [os.path.join(folder, f) for f in names[:n]]


def search(db, paths, extra):
    listing = "\n".join(paths) + "\n"
    cmd = [imgvec(), "-q", "search", db, "--from-file", "-", "-k", str(K), "--json", *extra]
    out = subprocess.run(cmd, input=listing, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def labelled_hits(preset, dataset, work, extra):
    """(class, score, same) for the top-K hits of every query of `dataset`."""
    bench = os.path.join(SHARED, "datasets", dataset)
    db = os.path.join(work, f"{preset}-{dataset}.imgvec")
    if not os.path.isdir(db):
        subprocess.run([imgvec(), "-q", "ingest", db, os.path.join(bench, "db"), "--pipeline", preset],
                       check=True)
    label_of = {os.path.basename(r["path"]): r["label"] for r in read_jsonl(os.path.join(bench, "db.jsonl"))}
    queries = {os.path.join(bench, q["path"]): q["label"] for q in read_jsonl(os.path.join(bench, "queries.jsonl"))}
    outsiders = {p: None for p in outsider_paths(OUTSIDERS)}
    paths = list(queries) + list(outsiders)
    rows = []
    for line in search(db, paths, extra):
        if "error" in line:
            sys.exit(f"{line['query']}: {line['error']}")
        want = queries.get(line["query"])
        for hit in line["results"]:
            same = want is not None and label_of.get(os.path.basename(hit["path"])) == want
            cls = hit["verdict"] or "unchecked"
            rows.append((cls, hit["alignment"] if cls == "aligned" else hit["score"], same))
    return rows


def shrunk(positives, n):
    return (positives + 0.5) / (n + 1)


def isotonic(points):
    """Pool-adjacent-violators on (score, same): blocks [score sum, positives, n], by score."""
    blocks = []
    for score, same in sorted(points):
        blocks.append([score, float(same), 1])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            s, p, n = blocks.pop(-2)
            blocks[-1] = [blocks[-1][0] + s, blocks[-1][1] + p, blocks[-1][2] + n]
    return blocks


def knots(points):
    """(score, confidence) knots, one per isotonic block at its mean score, both increasing; the
    engine interpolates linearly between them and holds the end values beyond them."""
    if not points:
        return None
    out = []
    for s, p, n in isotonic(points):
        knot = [round(s / n, 4), round(shrunk(p, n), 4)]
        if out and (knot[0] <= out[-1][0] or knot[1] <= out[-1][1]):
            continue  # shrinking can undo the order of two small blocks: keep the first
        out.append(knot)
    return out


def share(points):
    if not points:
        return None
    return round(shrunk(sum(same for _, same in points), len(points)), 4)


def calibrate(preset, work, extra_unchecked):
    by_class = defaultdict(list)
    for dataset in DATASETS:
        for cls, score, same in labelled_hits(preset, dataset, work, []):
            by_class[cls].append((score, same))
        if extra_unchecked:
            for cls, score, same in labelled_hits(preset, dataset, work, extra_unchecked):
                by_class[cls].append((score, same))
    counts = {c: [len(v), sum(s for _, s in v)] for c, v in sorted(by_class.items())}
    return {
        "measured_on": f"{' + '.join(DATASETS)} (+{OUTSIDERS} outside photos as queries each), top {K}",
        "hits": counts,
        "verified": share(by_class["verified"]),
        "aligned": knots(by_class["aligned"]),
        "unchecked": knots(by_class["unchecked"]),
        "unverified": knots(by_class["unverified"]),
    }


def crossing(knots, level):
    """The first score whose interpolated confidence reaches `level` (None if none does)."""
    if not knots:
        return None
    if knots[0][1] >= level:
        return knots[0][0]
    for (s0, c0), (s1, c1) in zip(knots, knots[1:]):
        if c1 >= level:
            return s0 + (s1 - s0) * (level - c0) / (c1 - c0)
    return None


def markdown(table):
    """The tables docs/CALIBRATION.md shows."""
    fmt = lambda v: "—" if v is None else f"{v:.3f}"
    out = ["| preset | hits (same source) | verified: confidence | unchecked: score for 0.5 / 0.95 "
           "| unverified: score for 0.5 / 0.95 | aligned: NCC for 0.5 / 0.95 |",
           "|---|---|---|---|---|---|"]
    order = ["fast", "balanced", "robust", "robust-vlad"]
    for name, c in sorted(table.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 9):
        hits = ", ".join(f"{k} {n} ({p})" for k, (n, p) in c["hits"].items())
        cells = [f"{fmt(crossing(c[k], 0.5))} / {fmt(crossing(c[k], 0.95))}" if c[k] else "—"
                 for k in ("unchecked", "unverified", "aligned")]
        out.append(f"| {name} | {hits} | {fmt(c['verified'])} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="fast,balanced,robust,robust-vlad")
    ap.add_argument("--work", default="/tmp/imgvec-calibrate")
    ap.add_argument("--out", default=os.path.join(ROOT, "engine/src/pipeline/calibration.json"))
    ap.add_argument("--markdown", action="store_true", help="print the tables of --out and stop")
    a = ap.parse_args()
    if a.markdown:
        with open(a.out) as f:
            print(markdown(json.load(f)))
        return
    os.makedirs(a.work, exist_ok=True)
    table = {}
    if os.path.exists(a.out):
        with open(a.out) as f:
            table = json.load(f)
    for preset in a.presets.split(","):
        local = preset.startswith("robust")
        table[preset] = calibrate(preset, a.work, ["--verify", "0"] if local else None)
        print(preset, json.dumps(table[preset]["hits"]), file=sys.stderr)
        with open(a.out, "w") as f:
            json.dump(table, f, indent=1, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
