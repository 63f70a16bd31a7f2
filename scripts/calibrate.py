#!/usr/bin/env python3
"""Calibrates each preset's answer to "is this the same image?" on the dev benchmarks.

  scripts/calibrate.py [--presets fast,balanced,robust,robust-vlad] [--work DIR] [--out FILE]

For each preset it ingests instances-dev and holidays-dev, searches them with their own queries
plus photos that are in neither (distractors-imagenet-1k, so that "not in the collection" is
measured too) with the preset's default search options, and labels each of the top 10 hits: the
same source as the query (same label in db.jsonl) or not. Presets that learn a PCA whitening
(all but fast) score on another scale once they have (512 rows), so they are calibrated in both
spaces: raw on instances-dev cut to 479 rows and holidays-dev (272), whitened on instances-dev
(684) and holidays-dev with 300 outside photos added. From those labels, per space:

- `verified`: the share of same-source hits among SIFT-verified hits;
- `beneath`: the share of same-source hits among hits found beneath pictures pasted over the
  query (robust's ranking tier 2; docs/SEARCH.md), which are left out of `aligned`;
- `aligned`: confidence as a function of the dense alignment (NCC) for aligned hits, fitted by
  isotonic regression (unrelated real photos align well too, so one share would mislead);
- `unchecked`: confidence as a function of the score for hits nobody verified (every hit of a
  preset without local features; robust with `--verify 0`), fitted by isotonic regression;
- `unverified`: the same for hits verification checked and did not confirm (robust).

`robust`'s `unchecked` curves come from the same searches run again with `--verify 0` (on its own
databases, so they follow its global vector even where that differs from `balanced`'s);
`robust-vlad` takes `robust`'s calibration.

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
K = 10
# Photos of things in neither benchmark, used as queries whose every hit is a different source.
OUTSIDERS = 150
# Outside photos added to holidays-dev so that it learns a whitening, and the rows below which
# none is learned (the presets' `min_rows`).
PADDING = 300
WHITEN_BELOW = 479


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def imgvec():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.environ.get("IMGVEC_BIN", os.path.join(target, "release", "imgvec"))


def photos(first, n):
    """`n` photos of distractors-imagenet-1k from the `first`, in name order."""
    folder = os.path.join(SHARED, "datasets", "distractors-imagenet-1k")
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    return [os.path.join(folder, f) for f in names[first:first + n]]


def search(db, paths, extra):
    listing = "\n".join(paths) + "\n"
    cmd = [imgvec(), "-q", "search", db, "--from-file", "-", "-k", str(K), "--json", *extra]
    out = subprocess.run(cmd, input=listing, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def collection_files(name):
    """The files of a calibration collection: `instances-dev`, `holidays-dev` (their db/),
    `instances-dev-479` (every source and the first distractors, 479 rows: below the 512 rows at
    which a whitening is learned) or `holidays-dev+300` (with 300 outside photos: above it)."""
    dataset = name.split("+")[0].removesuffix("-479")
    bench = os.path.join(SHARED, "datasets", dataset)
    rows = read_jsonl(os.path.join(bench, "db.jsonl"))
    files = [os.path.join(bench, r["path"]) for r in rows]
    if name.endswith("-479"):
        files = sorted(files, key=lambda f: not os.path.basename(f).startswith("g"))[:WHITEN_BELOW]
    if name.endswith("+300"):
        files += photos(OUTSIDERS, PADDING)
    return bench, files


def database(preset, name, work):
    """The preset's database of a collection (made once, kept in `work`), checked to be in the
    score space the collection is for."""
    db = os.path.join(work, f"{preset}-{name}.imgvec")
    bench, files = collection_files(name)
    if not os.path.isdir(db):
        subprocess.run([imgvec(), "-q", "ingest", db, *files, "--pipeline", preset], check=True)
    info = json.loads(subprocess.run([imgvec(), "info", db, "--json"], capture_output=True,
                                     text=True, check=True).stdout)
    return bench, db, info.get("whitening") is not None


def labelled_hits(preset, name, work, extra):
    """(class, score, same) for the top-K hits of every query of the collection, and whether
    its scores are whitened."""
    bench, db, whitened = database(preset, name, work)
    label_of = {os.path.basename(r["path"]): r["label"] for r in read_jsonl(os.path.join(bench, "db.jsonl"))}
    queries = {os.path.join(bench, q["path"]): q["label"] for q in read_jsonl(os.path.join(bench, "queries.jsonl"))}
    paths = list(queries) + photos(0, OUTSIDERS)
    rows = []
    for line in search(db, paths, extra):
        if "error" in line:
            sys.exit(f"{line['query']}: {line['error']}")
        want = queries.get(line["query"])
        for hit in line["results"]:
            same = want is not None and label_of.get(os.path.basename(hit["path"])) == want
            # A find beneath pictures pasted over the query (ranking tier 2) is its own class:
            # its alignment is measured with the pasted pictures masked out.
            cls = "beneath" if hit.get("tier") == 2 else hit["verdict"] or "unchecked"
            rows.append((cls, hit["alignment"] if cls == "aligned" else hit["score"], same))
    return rows, whitened


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


def curves(preset, names, work, whitened, verify_off):
    """One score space's curves, from the collections `names` (each must be in that space)."""
    by_class = defaultdict(list)
    for name in names:
        for extra in [[]] + ([["--verify", "0"]] if verify_off else []):
            rows, space = labelled_hits(preset, name, work, extra)
            if space != whitened:
                sys.exit(f"{preset} {name}: expected whitened={whitened}, the database says {space}")
            for cls, score, same in rows:
                by_class[cls].append((score, same))
    return {
        "hits": {c: [len(v), sum(s for _, s in v)] for c, v in sorted(by_class.items())},
        "verified": share(by_class["verified"]),
        "beneath": share(by_class["beneath"]),
        "aligned": knots(by_class["aligned"]),
        "unchecked": knots(by_class["unchecked"]),
        "unverified": knots(by_class["unverified"]),
    }


def calibrate(preset, work):
    """A preset's calibration: the raw space (fast always; the others below 512 rows) and, for
    presets that learn a whitening, the whitened space. `robust` also searches without
    verification, for its `unchecked` curves."""
    queries = f"their queries + {OUTSIDERS} outside photos, top {K}"
    if preset == "fast":
        out = curves(preset, ["instances-dev", "holidays-dev"], work, False, False)
        out["measured_on"] = f"instances-dev and holidays-dev ({queries})"
        return out
    local = preset == "robust"
    out = curves(preset, ["instances-dev-479", "holidays-dev"], work, False, local)
    out["whitened"] = curves(preset, ["instances-dev", "holidays-dev+300"], work, True, local)
    out["measured_on"] = (f"raw: instances-dev (479 rows) and holidays-dev; whitened: instances-dev "
                          f"and holidays-dev + {PADDING} outside photos ({queries})")
    return out


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
    """The table docs/CALIBRATION.md shows: a row per preset and score space."""
    fmt = lambda v: "—" if v is None else f"{v:.3f}"
    out = ["| preset | space | results (same source) | verified: confidence | beneath: confidence "
           "| unchecked: score for 0.5 / 0.95 | unverified: score for 0.5 / 0.95 | aligned: NCC "
           "for 0.5 / 0.95 |",
           "|---|---|---|---|---|---|---|---|"]
    order = ["fast", "balanced", "robust", "robust-vlad"]
    for name, c in sorted(table.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 9):
        for space, cv in [("raw", c), ("whitened", c.get("whitened"))]:
            if not cv:
                continue
            hits = ", ".join(f"{k} {n} ({p})" for k, (n, p) in cv["hits"].items())
            cells = [f"{fmt(crossing(cv[k], 0.5))} / {fmt(crossing(cv[k], 0.95))}" if cv[k] else "—"
                     for k in ("unchecked", "unverified", "aligned")]
            shares = f"{fmt(cv['verified'])} | {fmt(cv.get('beneath'))}"
            out.append(f"| {name} | {space} | {hits} | {shares} | " + " | ".join(cells) + " |")
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
        if preset == "robust-vlad":
            # robust with a VLAD block in the global vector: measured within 0.005 of robust's
            # score crossings when both were calibrated on the same data, so it shares robust's.
            table[preset] = dict(table["robust"], measured_on="robust's calibration: "
                                 + table["robust"]["measured_on"])
        else:
            table[preset] = calibrate(preset, a.work)
        print(preset, json.dumps(table[preset]["hits"]), file=sys.stderr)
        with open(a.out, "w") as f:
            json.dump(table, f, indent=1, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
