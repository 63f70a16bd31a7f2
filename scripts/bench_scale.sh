#!/usr/bin/env bash
# imgvec bench scale (issue #15, item 7): how each preset behaves once a benchmark is buried in
# N photo-like distractors. Per preset it builds a fresh database from the benchmark's db/ plus N
# distractors and measures, with the release CLI as a user runs it:
#   - ingest wall time -> images/s (one `imgvec ingest DB BENCH/db DISTRACTORS` process; ingest also
#     brings the indexes current before it exits, so that time is included; the gap to the ingest
#     summary's own seconds is reported as "refresh + start-up");
#   - bytes on disk per image: the whole folder (as du counts it) and per structure (segments/,
#     meta/ = RocksDB split into WAL, tables and the rest, models/, every indexes/<kind>, any other
#     sub-folder), plus the whole `imgvec info --json`;
#   - cold search: one `imgvec search DB Q --json` process, start to exit, wall and peak RSS
#     (/usr/bin/time -v), twice: the first after dropping the page cache when permitted;
#   - warm search: one `imgvec search DB --json Q1 ... Qn` process over every query: wall and peak
#     RSS; mean per query = (batch wall - second single-query wall) / (queries - 1); and p50/p99
#     per query in-process from `imgvec bench retrieval BENCH --db DB` (each query alone);
#   - recall@1 overall and per case (shared/bench/score.py), next to the same preset on the
#     benchmark alone (no distractors), measured the same way in the same run.
# Prints a markdown report (or writes it to --out, with the raw figures beside it as FILE.json) and
# writes everything to WORK/scale.json.
#
#   ./scripts/bench_scale.sh [--n 10000] [--presets fast,balanced,robust] [--bench DIR] [--out FILE.md]
#                            [--work DIR] [--keep] [--db-limit K] [--mode exact] [--threads T]
#                            [--compact] [--no-drop-caches] [--bin PATH] [--reuse-dbs]
#
# --work DIR keeps everything there (distractors are cached as DIR/distractors-N and reused);
# without it a temporary folder is used and removed at exit unless --keep. --db-limit K ingests
# only the first K images of db.jsonl and scores only the queries whose label is among them.
# --compact runs `imgvec compact DB` after ingest (timed separately). --reuse-dbs keeps the databases
# an earlier run in the same --work folder finished, with their ingest figures (marked ³ in the
# report), and measures only the searches: a new search build measured at 100k without hours of
# ingest. The binary is copied into
# the work folder first, so a rebuild during the run does not change what is measured. Distractors
# are made with the first python3 that has Pillow ($PYTHON, .venv, /usr/bin/python3, python3).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

N=10000
PRESETS=fast,balanced,robust
BENCH="$ROOT/../shared/datasets/instances-dev"
DISTRACTOR_SRC="$ROOT/../shared/datasets/distractors-imagenet-1k"
MAKE_DISTRACTORS="$ROOT/../shared/bench/make_distractors.py"
SCORE="$ROOT/../shared/bench/score.py"
OUT=""
WORK=""
KEEP=0
DB_LIMIT=""
MODE=exact
THREADS=""
COMPACT=0
DROP_CACHES=1
REUSE_DBS=0
BIN="${IMGVEC:-${CARGO_TARGET_DIR:-$ROOT/target}/release/imgvec}"

die() { echo "bench_scale: error: $*" >&2; exit 1; }
say() { echo "bench_scale: $*" >&2; }
usage() { sed -n '/^#   \.\/scripts/,/^#  *\[--compact/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
need_value() { [ "$#" -ge 2 ] && [ -n "$2" ] || { echo "bench_scale: $1 needs a value" >&2; usage; }; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        --n) need_value "$@"; N=$2; shift 2 ;;
        --presets) need_value "$@"; PRESETS=$2; shift 2 ;;
        --bench) need_value "$@"; BENCH=$2; shift 2 ;;
        --out) need_value "$@"; OUT=$2; shift 2 ;;
        --work) need_value "$@"; WORK=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --db-limit) need_value "$@"; DB_LIMIT=$2; shift 2 ;;
        --mode) need_value "$@"; MODE=$2; shift 2 ;;
        --threads) need_value "$@"; THREADS=$2; shift 2 ;;
        --compact) COMPACT=1; shift ;;
        --no-drop-caches) DROP_CACHES=0; shift ;;
        --bin) need_value "$@"; BIN=$2; shift 2 ;;
        --reuse-dbs) REUSE_DBS=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "bench_scale: unknown argument: $1" >&2; usage ;;
    esac
done

[[ "$N" =~ ^[0-9]+$ ]] || die "--n must be a whole number, got '$N'"
[ -z "$DB_LIMIT" ] || [[ "$DB_LIMIT" =~ ^[1-9][0-9]*$ ]] || die "--db-limit must be a positive number, got '$DB_LIMIT'"
[ -z "$THREADS" ] || [[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive number, got '$THREADS'"
IFS=, read -r -a PRESET_LIST <<<"$PRESETS"
[ "${#PRESET_LIST[@]}" -gt 0 ] || die "--presets is empty"
for p in "${PRESET_LIST[@]}"; do
    [[ "$p" =~ ^[a-z0-9-]+$ ]] || die "bad preset name '$p' (e.g. fast,balanced,robust)"
done
[ -x "$BIN" ] || die "imgvec binary not found at $BIN (build it: cargo build --release -p imgvec-cli, or pass --bin)"
[ -x /usr/bin/time ] || die "/usr/bin/time not found (Debian: apt-get install time)"
for f in db queries db.jsonl queries.jsonl; do
    [ -e "$BENCH/$f" ] || die "$BENCH is not a benchmark folder: $f is missing (needs db/, queries/, db.jsonl, queries.jsonl)"
done
BENCH=$(cd "$BENCH" && pwd)
[ -f "$SCORE" ] || die "score.py not found at $SCORE"

# Any python3 runs the stdlib-only parts; make_distractors.py needs Pillow.
PY=""
for c in "${PYTHON:-}" python3 /usr/bin/python3 "$ROOT/.venv/bin/python"; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && { PY=$(command -v "$c"); break; }
done
[ -n "$PY" ] || die "python3 not found"
PY_PIL=""
if [ "$N" -gt 0 ]; then
    for c in "${PYTHON:-}" "$ROOT/.venv/bin/python" /usr/bin/python3 python3; do
        [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && "$c" -c 'import PIL' 2>/dev/null \
            && { PY_PIL=$(command -v "$c"); break; }
    done
    [ -n "$PY_PIL" ] || die "no python3 with Pillow found for make_distractors.py (Debian: apt-get install python3-pil, or set PYTHON=...)"
    [ -f "$MAKE_DISTRACTORS" ] || die "make_distractors.py not found at $MAKE_DISTRACTORS"
    [ -d "$DISTRACTOR_SRC" ] || die "distractor source photos not found at $DISTRACTOR_SRC"
fi

KEEP_WORK=""
if [ -n "$WORK" ] || [ "$KEEP" = 1 ]; then KEEP_WORK=1; fi
if [ -n "$WORK" ]; then
    mkdir -p "$WORK" || die "cannot create work folder $WORK"
    WORK=$(cd "$WORK" && pwd)
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-scale.XXXXXX")
    if [ "$KEEP" = 1 ]; then
        say "work folder $WORK is kept (--keep)"
    else
        # Only the folder this script made itself is ever removed, and only after a clean run.
        trap 'rc=$?; if [ "$rc" = 0 ]; then rm -rf -- "$WORK"; else echo "bench_scale: failed; logs kept in $WORK" >&2; fi' EXIT
    fi
fi
say "work folder: $WORK"

# The helper: small stdlib-only Python steps (subset benchmark, timing files, disk walk, report).
read -r -d '' HELPER <<'PY' || true
import json, os, re, statistics, sys

def read_jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]

def subset(bench, k, out):
    """A benchmark folder with the first k db images (copied) and the queries whose label is among them."""
    db = read_jsonl(os.path.join(bench, "db.jsonl"))[:k]
    labels = {r["label"] for r in db}
    qs = [q for q in read_jsonl(os.path.join(bench, "queries.jsonl")) if q["label"] in labels]
    import shutil
    os.makedirs(os.path.join(out, "db"), exist_ok=True)
    for r in db:
        shutil.copy2(os.path.join(bench, r["path"]), os.path.join(out, r["path"]))
    os.symlink(os.path.join(bench, "queries"), os.path.join(out, "queries"))
    for name, rows in (("db.jsonl", db), ("queries.jsonl", qs)):
        with open(os.path.join(out, name), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"{len(db)} db images, {len(qs)} queries")

def queries(bench, out):
    with open(out, "w") as f:
        for q in read_jsonl(os.path.join(bench, "queries.jsonl")):
            f.write(os.path.join(bench, q["path"]) + "\n")

def parse_time(path):
    """/usr/bin/time -v output -> wall seconds, peak RSS kB, exit status."""
    text = open(path).read()
    wall = rss = status = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Elapsed (wall clock) time"):
            parts = [float(x) for x in line.rsplit(": ", 1)[1].split(":")]
            wall = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
        elif line.startswith("Maximum resident set size"):
            rss = int(line.rsplit(": ", 1)[1])
        elif line.startswith("Exit status"):
            status = int(line.rsplit(": ", 1)[1])
    return {"wall_s_time": wall, "peak_rss_kb": rss, "exit_status": status}

def index_kind(name):
    return re.sub(r"-[0-9a-f]{6,}(\.[A-Za-z0-9]+)?$", "", name)

def disk(db):
    """Bytes per structure: allocated (du) and apparent, each inode once."""
    seen, parts = set(), {}
    for dirpath, dirs, files in os.walk(db):
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if st.st_ino in seen:
                continue
            seen.add(st.st_ino)
            rel = os.path.relpath(p, db).split(os.sep)
            if len(rel) == 1:
                key = "(top-level files)"
            elif rel[0] == "meta":  # RocksDB: write-ahead logs, tables, its own bookkeeping
                key = ("meta/WAL (*.log)" if name.endswith(".log") else
                       "meta/tables (*.sst)" if name.endswith(".sst") else
                       "meta/other (LOG, MANIFEST, OPTIONS)")
            elif rel[0] == "indexes":
                key = "/".join(rel[:-1] + [index_kind(rel[-1])])
            else:
                key = rel[0]
            d = parts.setdefault(key, {"du_bytes": 0, "apparent_bytes": 0, "files": 0})
            d["du_bytes"] += st.st_blocks * 512
            d["apparent_bytes"] += st.st_size
            d["files"] += 1
    total = {k: sum(v[k] for v in parts.values()) for k in ("du_bytes", "apparent_bytes", "files")}
    return {"total": total, "structures": dict(sorted(parts.items()))}

def latency_fields(results):
    """Per-query timing in the search --json lines, if the CLI prints any."""
    for key in ("elapsed_ms", "latency_ms", "ms", "millis", "seconds", "elapsed_s"):
        vals = [r[key] for r in results if isinstance(r.get(key), (int, float))]
        if vals:
            scale = 1000.0 if key in ("seconds", "elapsed_s") else 1.0
            return key, [v * scale for v in vals]
    return None, []

def pct(vals, q):
    s = sorted(vals)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]

def collect(run_dir):
    """Everything one measured database left in run_dir, as one dict."""
    r = {}
    kv = {}
    with open(os.path.join(run_dir, "walls.txt")) as f:
        for line in f:
            k, v = line.split(None, 1)
            kv[k] = v.strip()
    r["settings"] = {k: v for k, v in kv.items() if not k.endswith("_s")}
    ingest_lines = read_jsonl(os.path.join(run_dir, "ingest.jsonl"))
    summary = next((l["summary"] for l in reversed(ingest_lines) if "summary" in l), None)
    info = json.load(open(os.path.join(run_dir, "info.json")))
    rows = info.get("live_rows") or 0
    r["rows"] = rows
    r["info"] = info
    r["ingest"] = {"wall_s": float(kv["ingest_s"]), "summary": summary,
                   "images_per_s": rows / float(kv["ingest_s"]) if float(kv["ingest_s"]) > 0 else None,
                   "refresh_and_startup_s": float(kv["ingest_s"]) - summary["seconds"] if summary and "seconds" in summary else None,
                   **parse_time(os.path.join(run_dir, "ingest.time"))}
    if "compact_s" in kv:
        r["compact"] = {"wall_s": float(kv["compact_s"]), **parse_time(os.path.join(run_dir, "compact.time"))}
        try:
            r["compact"]["report"] = read_jsonl(os.path.join(run_dir, "compact.jsonl"))[-1]
        except (IndexError, ValueError):
            pass
    d = disk(kv["db"])
    for v in [d["total"], *d["structures"].values()]:
        v["kb_per_image"] = v["du_bytes"] / 1024 / rows if rows else None
    models = d["structures"].get("models", {}).get("du_bytes", 0)
    d["total"]["kb_per_image_excl_models"] = (d["total"]["du_bytes"] - models) / 1024 / rows if rows else None
    st = info
    d["from_info"] = {
        "bytes_on_disk": st.get("bytes_on_disk"),
        "segment_bytes": st.get("segment_bytes"),
        "index_bytes": (st.get("indexes") or {}).get("bytes_on_disk"),
        "local_feature_bytes": (st.get("local") or {}).get("bytes"),
    }
    r["disk"] = d
    r["cold"] = []
    for i in (1, 2):
        c = {"wall_s": float(kv[f"cold{i}_s"]), **parse_time(os.path.join(run_dir, f"cold{i}.time"))}
        r["cold"].append(c)
    r["cold_query"] = kv.get("cold_query")
    r["page_cache_dropped"] = kv.get("cache_dropped") == "yes"
    res = read_jsonl(os.path.join(run_dir, "batch.jsonl"))
    nq = int(kv["queries"])
    bt = [parse_time(p) for p in sorted(
        os.path.join(run_dir, f) for f in os.listdir(run_dir) if re.match(r"batch\.\d+\.time$", f))]
    b = {"queries": nq, "processes": len(bt), "wall_s": float(kv["batch_s"]),
         "peak_rss_kb": max((t["peak_rss_kb"] or 0) for t in bt) if bt else None,
         "errors": sum(1 for x in res if "error" in x), "answered": len(res)}
    single = r["cold"][1]["wall_s"]
    b["mean_ms_per_query"] = ((b["wall_s"] - single * b["processes"]) / (nq - b["processes"]) * 1000
                             if nq > b["processes"] else None)
    key, vals = latency_fields(res)
    b["per_query_field"] = key
    if vals:
        b["p50_ms"], b["p99_ms"] = pct(vals, 0.5), pct(vals, 0.99)
    inproc = os.path.join(run_dir, "inproc.json")
    if os.path.exists(inproc) and os.path.getsize(inproc) > 0:
        m = json.load(open(inproc))["modes"][0]
        b["p50_ms"], b["p99_ms"] = m["latency_p50_ms"], m["latency_p99_ms"]
        b["per_query_field"] = "bench retrieval --db (one query at a time, in-process)"
        b["inproc_peak_rss_kb"] = parse_time(os.path.join(run_dir, "inproc.time"))["peak_rss_kb"]
    r["batch"] = b
    r["score"] = json.load(open(os.path.join(run_dir, "score.json")))
    return r

def fmt(v, spec=".1f", none="–"):
    return none if v is None else format(v, spec)

def report(work, out_md, meta_path, json_final):
    meta = json.load(open(meta_path))
    presets = meta["presets"]
    runs = {}
    for p in presets:
        runs[p] = {"scale": collect(os.path.join(work, "runs", p, "scale"))}
        base = os.path.join(work, "runs", p, "base")
        if os.path.isdir(base):
            runs[p]["base"] = collect(base)
    result = {**meta, "runs": runs}
    with open(os.path.join(work, "scale.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    n = meta["n"]
    L = [f"# imgvec bench scale: {os.path.basename(meta['bench'])} + {n} distractors",
         "",
         f"{meta['date']}, {meta['host']} ({meta['cores']} cores{', --threads ' + meta['threads'] if meta['threads'] else ''}), "
         f"`{meta['version']}`, search mode `{meta['mode']}`; {meta['db_images']} benchmark db images"
         f"{' (--db-limit)' if meta['db_limit'] else ''}, {meta['queries']} queries. "
         f"Page cache before the first cold search: {'dropped' if meta['cache_dropped'] else 'NOT dropped (' + meta['cache_note'] + ')'}.",
         ""]
    def r1(run, case):
        c = run["score"].get(case)
        return c["r@1"] if c else None
    for p in presets:
        s, b = runs[p]["scale"], runs[p].get("base")
        cols = [(f"with {n} distractors", s)] + ([("benchmark only", b)] if b else [])
        L += [f"## {p}", "", "| | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
        def row(label, f):
            L.append(f"| {label} | " + " | ".join(f(r) for _, r in cols) + " |")
        row("rows", lambda r: str(r["rows"]))
        row("ingest images/s (wall)", lambda r: fmt(r["ingest"]["images_per_s"])
            + (" ³" if r["settings"].get("reused_db") else ""))
        row("ingest wall s (of which refresh + start-up)", lambda r: f"{r['ingest']['wall_s']:.1f} ({fmt(r['ingest']['refresh_and_startup_s'])})")
        row("ingest peak RSS MB", lambda r: fmt((r["ingest"]["peak_rss_kb"] or 0) / 1024, ".0f"))
        if "compact" in s:
            row("compact wall s", lambda r: fmt(r.get("compact", {}).get("wall_s"), ".2f"))
        row("disk KB/image, total (du)", lambda r: fmt(r["disk"]["total"]["kb_per_image"], ".2f"))
        row("disk KB/image, total excl. models/", lambda r: fmt(r["disk"]["total"]["kb_per_image_excl_models"], ".2f"))
        keys = sorted({k for _, r in cols for k in r["disk"]["structures"]})
        for k in keys:
            row(f"&nbsp;&nbsp;{k} KB/image", lambda r, k=k: fmt(r["disk"]["structures"].get(k, {}).get("kb_per_image"), ".2f"))
        row("info: segment bytes / index bytes / local bytes per image",
            lambda r: " / ".join(fmt((r["disk"]["from_info"][x] / r["rows"]) if r["disk"]["from_info"][x] is not None and r["rows"] else None, ".0f")
                                 for x in ("segment_bytes", "index_bytes", "local_feature_bytes")))
        row("cold search 1 s / peak RSS MB" + (" (page cache dropped)" if meta["cache_dropped"] else ""),
            lambda r: f"{r['cold'][0]['wall_s']:.2f} / {fmt((r['cold'][0]['peak_rss_kb'] or 0) / 1024, '.0f')}")
        row("cold search 2 s / peak RSS MB", lambda r: f"{r['cold'][1]['wall_s']:.2f} / {fmt((r['cold'][1]['peak_rss_kb'] or 0) / 1024, '.0f')}")
        row("batch search s (processes) / peak RSS MB",
            lambda r: f"{r['batch']['wall_s']:.2f} ({r['batch']['processes']}) / {fmt((r['batch']['peak_rss_kb'] or 0) / 1024, '.0f')}")
        row("warm mean ms/query ¹", lambda r: fmt(r["batch"]["mean_ms_per_query"]))
        row("warm p50 / p99 ms ²", lambda r: f"{fmt(r['batch'].get('p50_ms'))} / {fmt(r['batch'].get('p99_ms'))}"
            if r["batch"].get("p50_ms") is not None else "n/a")
        row("peak RSS MB, one query at a time ²", lambda r: fmt((r["batch"].get("inproc_peak_rss_kb") or 0) / 1024, ".0f"))
        row("query errors", lambda r: str(r["batch"]["errors"]))
        L += ["", "| case | queries | recall@1 with distractors | benchmark only | Δ |", "|---|---|---|---|---|"]
        cases = sorted((c for c in s["score"] if c != "ALL")) + ["ALL"]
        for c in cases:
            a, z = r1(s, c), (r1(b, c) if b else None)
            d = f"{a - z:+.3f}" if a is not None and z is not None else "–"
            L.append(f"| {c} | {s['score'][c]['n']} | {fmt(a, '.3f')} | {fmt(z, '.3f')} | {d} |")
        L.append("")
    L += ["## Summary", "",
          "| preset | dims | rows | ingest img/s | KB/image (excl. models/) | cold s 1st / 2nd | cold RSS MB | warm p50 / p99 ms ² | batch RSS MB | R@1 | R@1 benchmark only | Δ |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in presets:
        s, b = runs[p]["scale"], runs[p].get("base")
        a, z = r1(s, "ALL"), (r1(b, "ALL") if b else None)
        L.append("| " + " | ".join([
            p, str(s["info"].get("dims") or (s["info"].get("pipeline") or {}).get("dims")), str(s["rows"]),
            fmt(s["ingest"]["images_per_s"]),
            f"{s['disk']['total']['kb_per_image']:.1f} ({fmt(s['disk']['total']['kb_per_image_excl_models'])})",
            f"{s['cold'][0]['wall_s']:.2f} / {s['cold'][1]['wall_s']:.2f}",
            fmt(max(c["peak_rss_kb"] or 0 for c in s["cold"]) / 1024, ".0f"),
            f"{fmt(s['batch'].get('p50_ms'))} / {fmt(s['batch'].get('p99_ms'))}",
            fmt((s["batch"]["peak_rss_kb"] or 0) / 1024, ".0f"),
            fmt(a, ".3f"), fmt(z, ".3f"), f"{a - z:+.3f}" if a is not None and z is not None else "–"]) + " |")
    L += ["",
          "¹ Mean per query in one warm process: (batch wall − second single-query wall) / (queries − 1); "
          "it includes decoding and featurizing the query, not process start-up, model and index loading.",
          "² `imgvec bench retrieval BENCH --db DB`: every query alone, timed in one read-only process "
          "after a warm-up query (decode, features, search, verification; no start-up or loading).",
          "Wall times are start to exit of one CLI process (/usr/bin/time -v, peak RSS from the same); "
          "ingest includes the index refresh the CLI runs before it exits. Disk: allocated bytes (as du) "
          "per live row; models/ is the database's copy of the model, a fixed cost. "
          f"Raw figures, `imgvec info --json` included: {json_final or '(not kept: pass --work DIR, --keep or --out)'}."]
    if any(runs[p][k]["settings"].get("reused_db") for p in presets for k in runs[p]):
        L += ["³ The database and its ingest figures are an earlier run's (`--reuse-dbs`); "
              "everything else was measured in this run with this binary."]
    L += [""]
    text = "\n".join(L)
    if out_md:
        with open(out_md, "w") as f:
            f.write(text)
    return text

cmd, *args = sys.argv[1:]
if cmd == "subset":
    subset(args[0], int(args[1]), args[2])
elif cmd == "queries":
    queries(*args)
elif cmd == "report":
    print(report(*args))
else:
    sys.exit(f"unknown helper command {cmd}")
PY

helper() { "$PY" -c "$HELPER" "$@"; }

# A private copy of the binaries (the `imgvec` launcher runs the `imgvec-engine` installed beside
# it), so a concurrent rebuild cannot swap them mid-run.
mkdir -p "$WORK/bin"
cp -f "$BIN" "$WORK/bin/imgvec"
ENGINE="$(dirname "$BIN")/imgvec-engine"
[ -x "$ENGINE" ] || die "imgvec-engine not found beside $BIN (build it: cargo build --release -p imgvec-cli)"
cp -f "$ENGINE" "$WORK/bin/imgvec-engine"
IMG="$WORK/bin/imgvec"
VERSION=$("$IMG" --version 2>/dev/null || echo "imgvec (version unknown)")
THREAD_ARGS=()
[ -n "$THREADS" ] && THREAD_ARGS=(--threads "$THREADS")

# The benchmark to measure: as given, or its first K db images (--db-limit).
if [ -n "$DB_LIMIT" ]; then
    SUB="$WORK/bench-limit-$DB_LIMIT"
    if [ ! -f "$SUB.complete" ]; then
        rm -rf -- "$SUB"
        helper subset "$BENCH" "$DB_LIMIT" "$SUB" >&2 || die "cannot build the --db-limit subset in $SUB"
        touch "$SUB.complete"
    fi
    BENCH_RUN="$SUB"
else
    BENCH_RUN="$BENCH"
fi
helper queries "$BENCH_RUN" "$WORK/queries.txt"
mapfile -t QUERIES <"$WORK/queries.txt"
[ "${#QUERIES[@]}" -gt 0 ] || die "no queries in $BENCH_RUN/queries.jsonl"
DB_IMAGES=$(grep -c . "$BENCH_RUN/db.jsonl")

# Distractors, cached per N under the work folder.
DISTRACTORS=""
if [ "$N" -gt 0 ]; then
    DISTRACTORS="$WORK/distractors-$N"
    # The marker sits beside the folder: inside it, ingest would count it as a skipped file.
    if [ -f "$DISTRACTORS.complete" ]; then
        say "reusing $N distractors in $DISTRACTORS"
    else
        rm -rf -- "$DISTRACTORS"
        say "making $N distractors in $DISTRACTORS ($PY_PIL)"
        "$PY_PIL" "$MAKE_DISTRACTORS" "$DISTRACTOR_SRC" "$DISTRACTORS" "$N" >&2 \
            || die "make_distractors.py failed"
        touch "$DISTRACTORS.complete"
    fi
fi

# Drops the page cache if this machine lets us; records the outcome.
CACHE_DROPPED=no
CACHE_NOTE="--no-drop-caches"
drop_caches() {
    [ "$DROP_CACHES" = 1 ] || return 0
    sync
    if { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        CACHE_DROPPED=yes
        CACHE_NOTE=""
    else
        CACHE_DROPPED=no
        CACHE_NOTE="writing /proc/sys/vm/drop_caches was refused"
    fi
}

# `timed NAME DIR CMD...`: runs CMD under /usr/bin/time -v into DIR/NAME.time; sets $ELAPSED and $RC.
timed() {
    local name=$1 dir=$2
    shift 2
    local t0=$EPOCHREALTIME
    set +e
    /usr/bin/time -v -o "$dir/$name.time" "$@"
    RC=$?
    set -e
    ELAPSED=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.4f", b - a }')
}

# `measure PRESET LABEL FOLDER...`: a fresh database of FOLDERs (or, with --reuse-dbs, the one
# an earlier run left), then every measurement into WORK/runs/PRESET/LABEL.
measure() {
    local preset=$1 label=$2
    shift 2
    local run="$WORK/runs/$preset/$label" db="$WORK/dbs/$preset-$label"
    if [ "$REUSE_DBS" = 1 ] && [ -d "$db" ] && [ -f "$run/ingest.time" ] \
        && grep -q '^ingest_s ' "$run/walls.txt" 2>/dev/null; then
        reuse_db "$preset" "$label" "$run" "$db" "$@"
    else
        ingest_db "$preset" "$label" "$run" "$db" "$@"
    fi
    search_db "$preset" "$label" "$run" "$db"
}

# `reuse_db PRESET LABEL RUN DB FOLDER...`: keeps the database and ingest figures an earlier run
# left (--reuse-dbs) and clears the rest of RUN for new search measurements.
reuse_db() {
    local preset=$1 label=$2 run=$3 db=$4
    shift 4
    say "$preset/$label: reusing $db and its ingest figures (--reuse-dbs)"
    local kept
    kept=$(mktemp -d "$WORK/kept.XXXXXX")
    mv "$run"/ingest.* "$kept"/
    if compgen -G "$run/compact.*" >/dev/null; then mv "$run"/compact.* "$kept"/; fi
    grep -E '^(ingest|compact)_s ' "$run/walls.txt" >"$kept/walls"
    rm -rf -- "$run"
    mkdir -p "$run"
    mv "$kept"/ingest.* "$run"/
    if compgen -G "$kept/compact.*" >/dev/null; then mv "$kept"/compact.* "$run"/; fi
    {
        echo "db $db"
        echo "preset $preset"
        echo "folders $*"
        echo "queries ${#QUERIES[@]}"
        echo "reused_db yes"
        cat "$kept/walls"
    } >"$run/walls.txt"
    rm -rf -- "$kept"
}

# `ingest_db PRESET LABEL RUN DB FOLDER...`: a fresh database of FOLDERs, timed.
ingest_db() {
    local preset=$1 label=$2 run=$3 db=$4
    shift 4
    rm -rf -- "$run" "$db"
    mkdir -p "$run" "$WORK/dbs"
    {
        echo "db $db"
        echo "preset $preset"
        echo "folders $*"
        echo "queries ${#QUERIES[@]}"
    } >"$run/walls.txt"

    say "$preset/$label: ingesting $* ..."
    timed ingest "$run" "$IMG" ingest "$db" "$@" --pipeline "$preset" --json "${THREAD_ARGS[@]}" \
        >"$run/ingest.jsonl" 2>"$run/ingest.err"
    case "$RC" in
        0) ;;
        1) grep -q '"summary"' "$run/ingest.jsonl" \
               || die "$preset/$label: ingest failed (exit 1): $(tail -n 3 "$run/ingest.err")"
           say "$preset/$label: warning: some images failed to ingest (see $run/ingest.jsonl)" ;;
        *) die "$preset/$label: ingest failed (exit $RC): $(tail -n 3 "$run/ingest.err")" ;;
    esac
    echo "ingest_s $ELAPSED" >>"$run/walls.txt"

    if [ "$COMPACT" = 1 ]; then
        say "$preset/$label: compact ..."
        timed compact "$run" "$IMG" compact "$db" --json "${THREAD_ARGS[@]}" >"$run/compact.jsonl" 2>"$run/compact.err"
        [ "$RC" = 0 ] || die "$preset/$label: compact failed (exit $RC): $(tail -n 3 "$run/compact.err")"
        echo "compact_s $ELAPSED" >>"$run/walls.txt"
    fi
}

# `search_db PRESET LABEL RUN DB`: every search measurement of DB into RUN.
search_db() {
    local preset=$1 label=$2 run=$3 db=$4
    "$IMG" info "$db" --json >"$run/info.json" 2>"$run/info.err" \
        || die "$preset/$label: info failed: $(tail -n 3 "$run/info.err")"

    say "$preset/$label: cold searches ..."
    local q=${QUERIES[0]}
    echo "cold_query $q" >>"$run/walls.txt"
    drop_caches
    echo "cache_dropped $CACHE_DROPPED" >>"$run/walls.txt"
    local i
    for i in 1 2; do
        timed "cold$i" "$run" "$IMG" search "$db" "$q" --json --mode "$MODE" "${THREAD_ARGS[@]}" \
            >"$run/cold$i.jsonl" 2>"$run/cold$i.err"
        [ "$RC" = 0 ] || die "$preset/$label: search failed (exit $RC): $(tail -n 3 "$run/cold$i.err")"
        echo "cold${i}_s $ELAPSED" >>"$run/walls.txt"
    done

    # All queries in one process unless the command line would be too long.
    say "$preset/$label: searching ${#QUERIES[@]} queries ..."
    local limit=$(( $(getconf ARG_MAX) / 2 - 65536 )) chunk=() len=0 n=0 total=0 qq
    : >"$run/batch.jsonl"
    run_chunk() {
        timed "batch.$n" "$run" "$IMG" search "$db" --json --mode "$MODE" "${THREAD_ARGS[@]}" "${chunk[@]}" \
            >>"$run/batch.jsonl" 2>>"$run/batch.err"
        [ "$RC" = 0 ] || [ "$RC" = 1 ] || die "$preset/$label: search failed (exit $RC): $(tail -n 3 "$run/batch.err")"
        [ "$RC" = 0 ] || say "$preset/$label: warning: some queries failed (see $run/batch.jsonl)"
        total=$(awk -v a="$total" -v b="$ELAPSED" 'BEGIN { printf "%.4f", a + b }')
        n=$((n + 1)); chunk=(); len=0
    }
    for qq in "${QUERIES[@]}"; do
        if [ "${#chunk[@]}" -gt 0 ] && [ $((len + ${#qq} + 1)) -gt "$limit" ]; then run_chunk; fi
        chunk+=("$qq"); len=$((len + ${#qq} + 1))
    done
    run_chunk
    echo "batch_s $total" >>"$run/walls.txt"

    "$PY" "$SCORE" "$BENCH_RUN" "$run/batch.jsonl" --json >"$run/score.json" \
        || die "$preset/$label: score.py failed"

    # Warm per-query latency in-process: every query alone, timed, in one read-only process.
    say "$preset/$label: timing ${#QUERIES[@]} queries one at a time (bench retrieval --db) ..."
    timed inproc "$run" "$IMG" bench "${THREAD_ARGS[@]}" retrieval "$BENCH_RUN" --db "$db" \
        --mode "$MODE" --json >"$run/inproc.json" 2>"$run/inproc.err"
    [ "$RC" = 0 ] || die "$preset/$label: bench retrieval --db failed (exit $RC): $(tail -n 3 "$run/inproc.err")"
}

for p in "${PRESET_LIST[@]}"; do
    if [ -n "$DISTRACTORS" ]; then
        measure "$p" scale "$BENCH_RUN/db" "$DISTRACTORS"
        measure "$p" base "$BENCH_RUN/db"
    else
        measure "$p" scale "$BENCH_RUN/db"
    fi
done

META="$WORK/meta.json"
BS_N=$N BS_PRESETS=$PRESETS BS_BENCH=$BENCH BS_BENCH_RUN=$BENCH_RUN BS_DB_LIMIT=$DB_LIMIT \
BS_DB_IMAGES=$DB_IMAGES BS_QUERIES=${#QUERIES[@]} BS_MODE=$MODE BS_THREADS=$THREADS BS_COMPACT=$COMPACT \
BS_CACHE_DROPPED=$CACHE_DROPPED BS_CACHE_NOTE=$CACHE_NOTE BS_VERSION=$VERSION BS_BIN=$BIN \
BS_DISTRACTORS=$DISTRACTORS "$PY" - "$META" <<'PY'
import datetime, json, os, platform, sys
e = os.environ
json.dump({
    "n": int(e["BS_N"]), "presets": e["BS_PRESETS"].split(","), "bench": e["BS_BENCH"],
    "bench_measured": e["BS_BENCH_RUN"], "db_limit": e["BS_DB_LIMIT"] or None,
    "db_images": int(e["BS_DB_IMAGES"]), "queries": int(e["BS_QUERIES"]), "mode": e["BS_MODE"],
    "threads": e["BS_THREADS"], "compact": e["BS_COMPACT"] == "1",
    "cache_dropped": e["BS_CACHE_DROPPED"] == "yes", "cache_note": e["BS_CACHE_NOTE"],
    "version": e["BS_VERSION"].strip(), "binary": e["BS_BIN"],
    "date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.machine(),
    "cores": os.cpu_count(), "distractors": e["BS_DISTRACTORS"] or None,
}, open(sys.argv[1], "w"), indent=1)
PY
JSON_FINAL=""
if [ -n "$OUT" ]; then
    JSON_FINAL="${OUT%.md}.json"
elif [ -n "$KEEP_WORK" ]; then
    JSON_FINAL="$WORK/scale.json"
fi
helper report "$WORK" "$OUT" "$META" "$JSON_FINAL" >"$WORK/scale.md.tmp" || die "report failed"
mv "$WORK/scale.md.tmp" "$WORK/scale.md"
if [ -n "$OUT" ]; then
    cp "$WORK/scale.json" "$JSON_FINAL"
    say "report written to $OUT, raw figures to $JSON_FINAL"
else
    cat "$WORK/scale.md"
fi
