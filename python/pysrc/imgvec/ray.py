"""imgvec on Ray: distributed ingest into shard databases, and search across them.

``ingest(paths_or_dataset, out_dir, shards=N)`` learns the pipeline's whitening once, on a
sample, in ``out_dir/template``; makes ``N`` shard databases like it (the same model and the
same frozen whitening, so scores compare across shards); extracts features on Ray workers, each
running imgvec's own featurizer; and hands each row to the one writer actor of its shard, which
stores it durably before it is acknowledged. ``ShardedDatabase(out_dir)`` holds one read-only
actor per shard, fans each query out and merges the answers into what one database holding
every row would answer. docs/RAY.md has the layout, the guarantees and how to run it on a cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import Database, Error, Hit, IngestEvent, InvalidArgument, QueryFeatures, Results, _imgvec, _native, _search_options

try:
    import ray
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError("imgvec.ray needs Ray: pip install 'ray[data]'") from e

PathLike = Union[str, "os.PathLike[str]"]

#: The file naming a sharded collection's layout, in its folder.
MANIFEST = "imgvec-shards.json"
TEMPLATE = "template"
#: Images tried, in order, for the first one that gives the template its pipeline.
PIPELINE_PROBE = 64
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def shard_of(key: str, shards: int) -> int:
    """The shard that stores the row with ``key`` (its canonical path): stable across runs and
    machines, so a re-run finds each row where it was stored."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


def writer_name(shard: PathLike) -> str:
    """The Ray actor name of the one writer of ``shard`` (one per shard in a cluster)."""
    return "imgvec-writer:" + os.path.realpath(os.fspath(shard))


def shard_dirs(out_dir: PathLike) -> List[Path]:
    """The shard folders of the collection in ``out_dir``, from its manifest."""
    root = Path(out_dir)
    manifest = root / MANIFEST
    try:
        layout = json.loads(manifest.read_text())
        return [root / name for name in layout["shards"]]
    except FileNotFoundError:
        raise Error(f"{manifest}: missing; {root} is not a sharded imgvec collection") from None
    except (ValueError, KeyError, TypeError) as e:
        raise Error(f"{manifest}: damaged ({e})") from None


def _walk(paths: Iterable[PathLike]) -> List[str]:
    """Canonical paths of the image files in ``paths`` (files, or folders walked), sorted."""
    found: Set[str] = set()
    for p in paths:
        p = os.path.realpath(os.fspath(p))
        if os.path.isdir(p):
            for folder, _, files in os.walk(p):
                found.update(
                    os.path.join(folder, f) for f in files if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
                )
        else:
            found.add(p)  # a missing or unreadable file is reported by its worker
    return sorted(found)


# -- actors ------------------------------------------------------------------------------------


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ShardWriter:
    """The one writer of a shard: stores rows durably, then acknowledges them. Restarted by
    Ray if its process dies; a retried commit finds its rows stored and reports them unchanged."""

    def __init__(self, path: str) -> None:
        self.path = path
        _imgvec.set_blas_threads(1)  # runs no model: OpenBLAS's spinning threads only cost
        self.db = Database(path, create=False, threads=1)

    def pid(self) -> int:
        return os.getpid()

    def stored_keys(self) -> List[str]:
        return [r.path for r in self.db.records()]

    def commit(self, rows: List[bytes]) -> List[Dict[str, Any]]:
        _, events = self.db.commit_prepared(rows)
        return [asdict(e) for e in events]

    def close(self) -> None:
        self.db.close()


def _commit(writers: List[Any], rows: Sequence[Tuple[str, bytes]]) -> List[Tuple[int, Dict[str, Any]]]:
    """Hands each (key, row) to its shard's writer, one call per shard, and returns each row's
    acknowledgement with its shard once every writer stored its rows."""
    by_shard: Dict[int, List[bytes]] = {}
    for key, row in rows:
        by_shard.setdefault(shard_of(key, len(writers)), []).append(row)
    shards = list(by_shard)
    acks = ray.get([writers[s].commit.remote(by_shard[s]) for s in shards])
    return [(s, e) for s, acked in zip(shards, acks) for e in acked]


class _Featurize:
    """A Ray Data worker: makes a batch of images into rows with the template's pipeline and
    hands each row to its shard's writer itself (the rows never pass through the driver);
    returns one event per image — the writer's acknowledgement once the row is stored, the
    failure of an image that could not be read, or a skip — with its shard (-1 for a failure).
    Images their shard stores already (``stored``: a one-element list holding the reference of
    each shard's keys) are skipped without being extracted."""

    def __init__(
        self, template: str, writers: List[Any], attrs: Dict[str, str], stored: Optional[List[Any]] = None
    ) -> None:
        self.template = Database(template, read_only=True, threads=1)
        self.writers = writers
        self.attrs = attrs
        self.stored: Optional[List[Set[str]]] = ray.get(stored[0]) if stored else None

    def _todo(self, key: str) -> bool:
        return self.stored is None or key not in self.stored[shard_of(key, len(self.writers))]

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, List[Any]]:
        keys = [str(k) for k in batch["path"]]
        fresh = [i for i, k in enumerate(keys) if self._todo(k)]
        skipped = len(keys) - len(fresh)
        if "bytes" in batch:
            items: List[Any] = [(keys[i], bytes(batch["bytes"][i])) for i in fresh]
        else:
            items = [keys[i] for i in fresh]
        rows, failed = self.template.prepare(items, attrs=self.attrs) if items else ([], [])
        events = _commit(self.writers, rows) + [(-1, asdict(e)) for e in failed]
        return {
            "shard": [s for s, _ in events] + [-1] * skipped,
            "event": [json.dumps(e) for _, e in events] + [""] * skipped,
        }


@ray.remote(num_cpus=0)
class ShardReader:
    """A read-only handle on one shard."""

    def __init__(self, path: str, threads: Optional[int]) -> None:
        self.path = path
        # Query features come made: no model runs here, and OpenBLAS's threads, which spin
        # between products, took the cores verification wants (it ran 2× slower on 2 cores).
        _imgvec.set_blas_threads(1)
        self.db = Database(path, read_only=True, create=False, threads=threads or os.cpu_count())
        self.db.preload()

    def describe(self) -> Dict[str, Any]:
        info = self.db.info()
        pipeline = info.get("pipeline") or {}
        whitening = info.get("whitening") or {}
        query = pipeline.get("query") or {}
        return {
            "rows": info.get("live_rows"),
            "model": pipeline.get("model_fingerprint"),
            "name": pipeline.get("name"),
            "whitening": whitening.get("fingerprint"),
            "local": pipeline.get("local") is not None,
            "verify": query.get("verify") or {},
            "augment": query.get("augment", "none"),
        }

    def search(self, queries: List[QueryFeatures], options: Dict[str, Any]) -> List[Any]:
        """Each query's hits as the native module gives them (dicts of ``Hit``'s fields but
        ``rank``, which the merge gives), or its error message: making ``Hit`` objects to turn
        them back into dicts cost ~1.5 ms a call for the ~90 hits of a first verification."""
        answers = self.db._native.search([_native(q) for q in queries], _search_options(**options))
        return [str(a) if isinstance(a, BaseException) else a for a in answers]

    def verify(
        self, queries: List[QueryFeatures], options: Dict[str, Any], vectors: int
    ) -> List[Tuple[Any, Dict[int, npt.NDArray[np.float32]]]]:
        """``search``, each answer with the search-space vectors of its first ``vectors``
        verified hits: the collection's verified expansion sums the best of them without asking
        the shards again."""
        out: List[Tuple[Any, Dict[int, npt.NDArray[np.float32]]]] = []
        for answer in self.search(queries, options):
            ids = [] if isinstance(answer, str) else [h["id"] for h in answer if h["verdict"] == "verified"][:vectors]
            found = self.db.space_vectors(ids) if ids else []
            out.append((answer, {i: v for i, v in zip(ids, found) if v is not None}))
        return out

    def candidates(self, queries: List[QueryFeatures], options: Dict[str, Any]) -> List[Any]:
        return [str(c) if isinstance(c, BaseException) else c for c in self.db.candidates(list(queries), **options)]


# -- ingest ------------------------------------------------------------------------------------


@dataclass
class IngestReport:
    """What one distributed ingest did."""

    stored: int = 0
    unchanged: int = 0
    replaced: int = 0
    errors: int = 0
    #: Images a previous run stored already (by key), not read again.
    skipped: int = 0
    seconds: float = 0.0
    #: Of ``seconds``: learning the template on the sample and making the shards.
    template_seconds: float = 0.0
    #: Of the rows counted: the sample's, made while learning the template (in
    #: ``template_seconds``) and committed to their shards as they were.
    from_sample: int = 0
    images_per_sec: float = 0.0
    shards: List[str] = field(default_factory=list)
    #: Every image that failed, with its reason.
    failed: List[IngestEvent] = field(default_factory=list)


def _store_sample(template: Database, items: Sequence[Any]) -> List[str]:
    """Stores ``items`` (files, or (key, bytes)) in the template; returns why each failed (the
    ingest proper reports them again, as its events)."""
    failed: List[str] = []
    files = [i for i in items if not isinstance(i, tuple)]
    if files:
        def note(e: IngestEvent) -> None:
            if e.status == "error":
                failed.append(f"{e.path}: {e.error}")

        template.ingest(files, progress=False, on_event=note)
    for key, data in (i for i in items if isinstance(i, tuple)):
        try:
            template.insert(data, key=key)
        except Error as e:
            failed.append(f"{key}: {e}")
    return failed


def _learn_on_sample(template: Database, items: Sequence[Any], attrs: Mapping[str, str]) -> List[Tuple[str, bytes]]:
    """Stores ``items`` (files, or (key, bytes)) in the template, to learn its whitening on, and
    returns their rows for the shards: a row is the pipeline's raw features (the whitening
    applies to searches), so each shard stores exactly the bytes it would have made, and the
    sample is not extracted twice. Failures are left to the ingest proper, which reports them."""
    rows, _ = template.prepare(items, attrs=attrs)
    template.commit_prepared(row for _, row in rows)
    return rows


def _prepare_layout(
    root: Path,
    sample_of: Callable[[int], Sequence[Any]],
    sample: int,
    shards: int,
    pipeline: Optional[str],
    model: Optional[PathLike],
    attrs: Mapping[str, str],
) -> Tuple[Path, List[Path], List[Tuple[str, bytes]]]:
    """The template (learned once, on the ``sample`` images ``sample_of(sample)`` gives, asked
    for only when the template is new) and the shard databases made like it; what a previous run
    made is reused, and must have as many shards. Also the rows of the sample the template
    learned on in this call, for their shards (none when the template was there already)."""
    manifest = root / MANIFEST
    if manifest.exists():
        dirs = shard_dirs(root)
        if len(dirs) != shards:
            raise InvalidArgument(f"{root}: holds {len(dirs)} shards, not {shards}")
    names = [f"shard-{i:03d}" for i in range(shards)]
    template_dir = root / TEMPLATE
    root.mkdir(parents=True, exist_ok=True)
    rows: List[Tuple[str, bytes]] = []
    with Database(template_dir, pipeline=pipeline, model=model) as template:
        if len(template) == 0:
            # One image gives the template its pipeline (the first of the sample that reads);
            # the sample only matters to a pipeline that learns a whitening (balanced, robust),
            # not to fast or a custom one.
            failed: List[str] = []
            for item in sample_of(PIPELINE_PROBE):
                failed += _store_sample(template, [item])
                if len(template):
                    break
            if len(template) == 0:
                raise Error(f"{root}: none of the first {len(failed)} images could be stored: " + "; ".join(failed[:3]))
            if (template.info().get("pipeline") or {}).get("whitening"):
                rows = _learn_on_sample(template, sample_of(sample), attrs)
        for name in names:
            d = root / name
            if not Database.exists(d):
                template.create_like(d).close()
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"format": 1, "template": TEMPLATE, "shards": names}, indent=1))
    os.replace(tmp, manifest)
    return template_dir, [root / n for n in names], rows


def ingest(
    source: Union[PathLike, Iterable[PathLike], "ray.data.Dataset"],
    out_dir: PathLike,
    *,
    shards: int = 2,
    pipeline: Optional[str] = None,
    model: Optional[PathLike] = None,
    workers: Optional[int] = None,
    batch_size: int = 64,
    sample: int = 2048,
    attrs: Optional[Mapping[str, str]] = None,
    journal: Optional[PathLike] = None,
) -> IngestReport:
    """Ingests ``source`` (files or folders, or a Ray Dataset with ``path`` and ``bytes``
    columns, as ``ray.data.read_binary_files(..., include_paths=True)`` makes) into ``shards``
    databases under ``out_dir``, extracting on ``workers`` Ray workers (one CPU each; default:
    the cluster's CPUs). ``model`` (a TorchScript file) is a custom extractor, or with
    ``pipeline`` that preset's CNN replaced, as for :class:`imgvec.Database`; the template
    stores a copy, which every worker and shard uses. Each image's event is acknowledged once
    its shard stored it durably; ``journal`` appends each acknowledged event as a JSON line.
    Re-running resumes: what is stored is skipped, and a killed worker loses no acknowledged row."""
    if shards < 1:
        raise InvalidArgument(f"shards must be at least 1, not {shards}")
    if not ray.is_initialized():
        ray.init()
    start = time.monotonic()
    root = Path(out_dir)
    dataset = source if isinstance(source, ray.data.Dataset) else None
    paths: Optional[List[str]] = None
    if dataset is None:
        paths = _walk([source] if isinstance(source, (str, os.PathLike)) else source)
    attrs_ = {str(k): str(v) for k, v in (attrs or {}).items()}
    template_dir, dirs, sample_rows = _prepare_layout(
        root, partial(_sample, dataset, paths), sample, shards, pipeline, model, attrs_
    )
    template_seconds = time.monotonic() - start
    writers = [
        ShardWriter.options(name=writer_name(d), get_if_exists=True).remote(str(d))  # type: ignore[attr-defined]
        for d in dirs
    ]
    try:
        report = _run(dataset, paths, template_dir, writers, batch_size, workers, attrs_, journal, sample_rows)
    finally:
        for w in writers:
            try:
                ray.get(w.close.remote())
            except Exception:  # noqa: BLE001 - a dead writer has nothing left to close
                pass
            ray.kill(w)
    report.shards = [str(d) for d in dirs]
    report.template_seconds = template_seconds
    report.seconds = time.monotonic() - start
    done = report.stored + report.unchanged + report.replaced
    report.images_per_sec = done / report.seconds if report.seconds > 0 else 0.0
    return report


def _sample(dataset: Optional["ray.data.Dataset"], paths: Optional[List[str]], n: int) -> Sequence[Any]:
    """``n`` images to learn on: every m-th file of a file list, or a Dataset's first rows."""
    if dataset is not None:
        return [(str(r["path"]), bytes(r["bytes"])) for r in dataset.limit(n).take_all()]
    files = paths or []
    return files[:: max(1, len(files) // max(1, n))][:n]


def _run(
    dataset: Optional["ray.data.Dataset"],
    paths: Optional[List[str]],
    template_dir: Path,
    writers: List[Any],
    batch_size: int,
    workers: Optional[int],
    attrs: Mapping[str, str],
    journal: Optional[PathLike],
    sample_rows: List[Tuple[str, bytes]],
) -> IngestReport:
    """Commits the sample's rows to their shards, skips what the shards hold, then extracts and
    commits the rest; counts the events (appending each to the ``journal``)."""
    report = IngestReport()
    with open(journal, "a", encoding="utf-8") if journal is not None else contextlib.nullcontext() as log:
        shards = len(writers)
        report.from_sample = len(sample_rows)
        for s, e in _commit(writers, sample_rows):
            _count(report, s, e, log)
        stored = [set(keys) for keys in ray.get([w.stored_keys.remote() for w in writers])]
        # A file list is filtered here; a Dataset's rows by the workers, as they are read (each
        # worker gets the shards' keys once, through the object store).
        skip: Optional[List[Any]] = None
        sample = {key for key, _ in sample_rows}
        if paths is not None:
            left = [p for p in paths if p not in stored[shard_of(p, shards)]]
            # The sample's images were counted when their rows were committed, not as skipped.
            report.skipped = len(paths) - len(left) - len(sample.intersection(paths))
            dataset = ray.data.from_items([{"path": p} for p in left]) if left else None
        elif any(stored):
            skip = [ray.put(stored)]
        if dataset is not None:
            cpus = int(ray.available_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
            events = dataset.map_batches(
                _Featurize,
                fn_constructor_kwargs={
                    "template": str(template_dir),
                    "writers": writers,
                    "attrs": dict(attrs),
                    "stored": skip,
                },
                batch_size=batch_size,
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, workers or cpus)),
                num_cpus=1,
            )
            _count_all(events, report, log)
        if paths is None:
            # The Dataset's rows the sample was read from are skipped by the workers.
            report.skipped -= len(sample)
    return report


def _count_all(events: "ray.data.Dataset", report: IngestReport, log: Any) -> None:
    """Counts each image's event as the workers return it (a row's once its writer stored it),
    appending each to the journal; an empty event is an image skipped."""
    for batch in events.iter_batches(batch_size=None):
        for shard, line in zip(batch["shard"], batch["event"]):
            if not line:
                report.skipped += 1
            else:
                _count(report, int(shard), json.loads(line), log)


def _count(report: IngestReport, shard: int, e: Dict[str, Any], log: Any) -> None:
    """Counts one image's event, appending it to the journal."""
    if log is not None:
        log.write(json.dumps(dict(e, shard=shard)) + "\n")
        log.flush()
    status = e["status"]
    if status == "error":
        report.errors += 1
        report.failed.append(IngestEvent.from_json(e))
    elif status in ("stored", "unchanged", "replaced"):
        setattr(report, status, getattr(report, status) + 1)


# -- search ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardHit(Hit):
    """A hit of a sharded search: ``id`` is the row's id in shard number ``shard``."""

    shard: int = 0


class ShardedResults(Results):
    """A sharded search's answer; ``answered`` lists the shards that answered (all of them
    unless the collection was opened with ``allow_partial=True``), ``missing`` says why each
    other one did not."""

    answered: List[str]
    missing: Dict[str, str]


def merge_order(hit: Mapping[str, Any]) -> Tuple[int, float]:
    """How hits of several shards interleave: the order one database gives its candidates —
    by ranking tier (what the query shows beneath pictures pasted over it, then the verified,
    then the others verification checked), each by its ranking key, then the rest by score
    (larger first)."""
    tier = hit.get("tier")
    key = hit.get("rank_key")
    return (-1 if tier is None else int(tier), float(hit["score"] if key is None else key))


def _kept(hits: List[Dict[str, Any]], options: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The hits a search with ``options`` answers with: at least its ``threshold``, and matches
    only with ``matches_only``."""
    threshold = options.get("threshold")
    return [
        h
        for h in hits
        if (threshold is None or h["score"] >= threshold) and not (options.get("matches_only") and h["match"] == "none")
    ]


def merge(answers: Sequence[Tuple[int, Sequence[Mapping[str, Any]]]], k: int) -> List[Dict[str, Any]]:
    """The first ``k`` hits over every shard's answer, ``(shard, hits)``, in one database's
    order; ties go to the smaller (shard, id)."""
    pooled = [dict(h, shard=s) for s, hits in answers for h in hits]
    pooled.sort(key=lambda h: (h["shard"], h["id"]))
    pooled.sort(key=merge_order, reverse=True)
    return pooled[:k]


CANDIDATE_LISTS = ("shortlist", "voted", "dense", "expanded")


def merge_candidates(parts: Sequence[Tuple[int, Mapping[str, Any]]]) -> Dict[int, Dict[str, Any]]:
    """The collection's verification candidates from each shard's (``Database.candidates``),
    ``(shard, candidates)``: the best ``asked`` of each list over every shard, by score (ties to
    the smaller (shard, id)), as one database holding every row would pick them; handed back
    per shard, each shard's rows of them (and their turns), for it to verify. ``expanded`` (the
    expanded query's top rows) is as long as the shortlist."""
    asked = [max((int(c["asked"][i]) for _, c in parts), default=0) for i in range(3)]
    out: Dict[int, Dict[str, Any]] = {s: {n: [] for n in CANDIDATE_LISTS} for s, _ in parts}
    for n, name in zip(asked + asked[:1], CANDIDATE_LISTS):
        pooled = sorted(((float(score), s, int(i)) for s, c in parts for i, score in c.get(name, [])),
                        key=lambda e: (-e[0], e[1], e[2]))
        for score, s, i in pooled[:n]:
            out[s][name].append([i, score])
    for s, c in parts:
        mine = {i for name in CANDIDATE_LISTS for i, _ in out[s][name]}
        out[s]["turns"] = [[int(i), float(t)] for i, t in c["turns"] if int(i) in mine]
        out[s]["asked"] = asked
    return out


def _found(hits: List[Dict[str, Any]], by: str) -> bool:
    """Whether an answer holds what the upright fallback counts as the query's match (``by``:
    ``"verified"`` or ``"likely"``, engine search/upright.rs ``found``)."""
    if by == "verified":
        return any(h["verdict"] == "verified" for h in hits)
    return any(h["match"] != "none" for h in hits)


def _keeps_turns(turned: List[Dict[str, Any]], by: str) -> bool:
    """Whether the upright fallback's turned answer replaces the upright one (engine
    search/upright.rs ``keeps_turns``): always when verification decides, else when it holds a
    match."""
    return by == "verified" or _found(turned, by)


class ShardedDatabase:
    """The shards of one collection (``ingest``'s ``out_dir``, or a list of shard folders),
    searched as one database: one read-only Ray actor per shard. Every shard must open and be
    made like the others, or it is an error naming it; with ``allow_partial=True`` a missing or
    damaged shard is left out and each answer says which shards answered. ``threads``: each
    shard reader's search threads (default: its node's CPUs — a shard whose part of a query is
    larger then takes the cores the others leave idle)."""

    def __init__(
        self,
        shards: Union[PathLike, Sequence[PathLike]],
        *,
        allow_partial: bool = False,
        threads: Optional[int] = None,
        featurize_threads: Optional[int] = None,
    ) -> None:
        if not ray.is_initialized():
            ray.init()
        dirs = shard_dirs(shards) if isinstance(shards, (str, os.PathLike)) else [Path(p) for p in shards]
        self.allow_partial = allow_partial
        self.missing: Dict[str, str] = {}
        self._actors: List[Tuple[int, str, Any]] = []
        described: List[Tuple[int, str, Any, Dict[str, Any]]] = []
        for i, folder in enumerate(dirs):
            try:
                if not Database.exists(folder):
                    raise Error(f"{folder}: no imgvec database there")
                actor = ShardReader.remote(str(folder), threads)  # type: ignore[attr-defined]
                described.append((i, str(folder), actor, ray.get(actor.describe.remote())))
            except Exception as e:  # noqa: BLE001 - any failure to open names the shard
                self._lost(str(folder), e)
        if not described:
            raise Error(f"no shard could be opened: {self.missing}")
        first = described[0][3]
        #: Live rows of the shards that answer (a shard made otherwise is left out of them too:
        #: each shard's share of dense-window measuring is taken of this).
        self.rows = 0
        for i, d, actor, desc in described:
            same = all(desc[f] == first[f] for f in ("model", "name", "whitening"))
            if not same:
                ray.kill(actor)
                self._lost(d, Error(f"{d}: not made like {described[0][1]} (model or whitening differ)"))
                continue
            self._actors.append((i, d, actor))
            self.rows += int(desc["rows"] or 0)
        # Each query is featurized once, here, and its features sent to every shard (the model
        # is the first shard's copy; every shard's is the same).
        self._featurizer = Database(described[0][1], read_only=True, threads=featurize_threads or os.cpu_count())
        self._local = bool(first["local"])
        self._verify_defaults = first["verify"]
        self._augment_default = first["augment"]

    def _lost(self, shard: str, why: BaseException) -> None:
        if not self.allow_partial:
            raise Error(f"shard {shard}: {why}") from why
        self.missing[shard] = str(why)

    def __len__(self) -> int:
        return self.rows

    @property
    def shards(self) -> List[str]:
        return [d for _, d, _ in self._actors]

    def close(self) -> None:
        for _, _, actor in self._actors:
            ray.kill(actor)
        self._actors = []
        self._featurizer.close()

    def __enter__(self) -> "ShardedDatabase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fan_out(
        self,
        queries: "ray.ObjectRef[List[QueryFeatures]]",
        options: Dict[str, Any],
        candidates: Optional[Dict[int, Dict[str, Any]]] = None,
        call: str = "search",
        *extra: Any,
    ) -> Tuple[List[Any], Dict[str, str]]:
        """Every answering shard's answers to ``queries`` (put once, for every shard and round;
        ``call``: the shard's ``search``, ``verify`` or ``candidates``, given ``extra`` after the
        options): [(shard, answers)], and the shards that failed (an error unless
        ``allow_partial``). ``candidates``: what each shard verifies (shards without are left
        out: they failed before)."""
        calls = []
        for i, d, actor in self._actors:
            if candidates is not None and i not in candidates:
                continue
            opts = options if candidates is None else dict(options, candidates=candidates[i])
            calls.append((i, d, getattr(actor, call).remote(queries, opts, *extra)))
        answered, missing = [], dict(self.missing)
        for i, d, ref in calls:
            try:
                answered.append((i, ray.get(ref)))
            except Exception as e:  # noqa: BLE001 - a dead or failing shard names itself
                if not self.allow_partial:
                    raise Error(f"shard {d}: {e}") from e
                missing[d] = str(e)
        return answered, missing

    def _merged(self, answered: List[Any], qi: int, k: int) -> Union[str, List[Dict[str, Any]]]:
        per_shard = []
        for shard, answers in answered:
            if isinstance(answers[qi], str):
                return str(answers[qi])  # the query itself failed (unreadable image)
            per_shard.append((shard, answers[qi]))
        return merge(per_shard, k)

    @staticmethod
    def _expansion(
        hits: List[Dict[str, Any]], n: int, vectors: Mapping[Tuple[int, int], npt.NDArray[np.float32]]
    ) -> Optional[npt.NDArray[np.float32]]:
        """The sum of the best ``n`` verified hits' vectors in the search space (``vectors``:
        by (shard, id), as the shards' ``verify`` returned them)."""
        total: Optional[npt.NDArray[np.float32]] = None
        for h in [h for h in hits if h.get("verdict") == "verified"][:n]:
            v = vectors.get((h["shard"], h["id"]))
            if v is not None:
                total = v.copy() if total is None else total + v
        return total

    def _pass(
        self, images: List[Any], options: Dict[str, Any], k: int, like: Optional[List[Optional[bytes]]] = None
    ) -> Tuple[List[Any], Dict[str, str], List[Any]]:
        """One pass of the engine's pipeline: each image featurized once, then searched on every
        shard; an image that cannot be read is its error message. Also returns what each image
        was featurized into; ``like``: each image's features from an earlier pass, whose local
        features are taken instead of extracted again."""
        made = self._featurizer._native.featurize(images, _search_options(**options), like)
        # The model is done until the next query: its OpenBLAS threads would spin on the cores
        # the shards search on (blas.rs in the native module says when this is safe).
        _imgvec.rest_blas_threads()
        ok = [(i, QueryFeatures(f)) for i, f in enumerate(made) if isinstance(f, bytes)]
        answers, missing = self._search_features([f for _, f in ok], options, k)
        out: List[Any] = [None if isinstance(f, bytes) else str(f) for f in made]
        for (i, _), a in zip(ok, answers):
            out[i] = a
        return out, missing, made

    def _search_features(
        self, queries: List[QueryFeatures], options: Dict[str, Any], k: int
    ) -> Tuple[List[Any], Dict[str, str]]:
        """Features searched on every shard: without verification a plain merge. With it, as one
        database: every shard's candidates merged into the collection's, each shard verifying
        its rows of them (returning the vectors of its best verified rows with its answer); then
        verified query expansion with the best of what verified anywhere, each query again on
        every shard, which verifies its rows of the collection's top expanded ranking."""
        if not queries:
            return [], dict(self.missing)
        expand = options.get("expand")
        if expand is None:
            expand = int(self._verify_defaults.get("expand", 0))
        if not self._local or options.get("verify") == 0:
            answered, missing = self._fan_out(ray.put(queries), options)
            return [self._merged(answered, qi, k) for qi in range(len(queries))], missing
        whole = ray.put(queries)
        # Each shard measures its share of the windows one database would (docs/RAY.md).
        gathered, missing = self._fan_out(whole, dict(options, collection_rows=self.rows), None, "candidates")
        first = dict(options, expand=0, k=max(k, expand))
        out: List[Any] = []
        for qi, q in enumerate(queries):
            failed = next((a[qi] for _, a in gathered if isinstance(a[qi], str)), None)
            if failed is not None:
                out.append(failed)  # the query itself failed
                continue
            lists = merge_candidates([(s, a[qi]) for s, a in gathered])
            one = whole if len(queries) == 1 else ray.put([q])
            # Every candidate a shard checked comes back, whatever its score or match (the
            # threshold and matches_only apply to the merge): looking beneath needs all the
            # matched ones.
            most = max((sum(c["asked"]) for c in lists.values()), default=0)
            checked = dict(first, k=max(k, expand, most), threshold=None, matches_only=False)
            verified, lost = self._fan_out(one, checked, lists, "verify", expand)
            missing.update(lost)
            vectors = {(s, i): v for s, a in verified for i, v in a[0][1].items()}
            verified = self._look_beneath(one, checked, lists, verified, missing)
            merged = self._merged([(s, [a[0][0]]) for s, a in verified], 0, checked["k"])
            with_ = None if isinstance(merged, str) or expand == 0 else self._expansion(merged, expand, vectors)
            if with_ is None and any("beneath" in c for c in lists.values()):
                # No expansion call follows to rank with the pick: one more verification does.
                again, lost = self._fan_out(one, checked, lists, "verify", 0)
                missing.update(lost)
                merged = self._merged([(s, [a[0][0]]) for s, a in again], 0, checked["k"])
            if with_ is None:
                out.append(merged if isinstance(merged, str) else _kept(merged, options)[:k])
                continue
            second = dict(options, expand=expand, expand_with=with_.tolist())
            found, lost = self._fan_out(one, second, None, "candidates")
            missing.update(lost)
            expanded = merge_candidates([(s, a[0]) for s, a in found if not isinstance(a[0], str)])
            for s, c in lists.items():
                c["expanded"] = expanded.get(s, {}).get("expanded", [])
            again, lost = self._fan_out(one, second, lists)
            missing.update(lost)
            out.append(self._merged(again, 0, k))
        return out, missing

    def _look_beneath(
        self,
        one: Any,
        options: Dict[str, Any],
        lists: Dict[int, Dict[str, Any]],
        verified: List[Any],
        missing: Dict[str, str],
    ) -> List[Any]:
        """Looking beneath pasted pictures as one database does (docs/SEARCH.md): when the
        collection's matched hits (those with a footprint in ``verified``, every shard's
        answer) cover only parts of the query, every shard aligns its candidates with the rest
        of the query (``Hit.beneath``) given all of them, and the engine picks from every
        shard's alignments. ``lists`` gains
        both for the next call, in which the shard holding the pick ranks it first (the answers
        returned, to merge, rank as before: only the pick changes the order); returns
        ``verified`` when there is nothing to look beneath."""
        found = [
            (h["coverage"], h["footprint"])
            for _, a in verified
            if not isinstance(a[0][0], str)
            for h in a[0][0]
            if h.get("footprint") is not None
        ]
        if not found or not _imgvec.looks_beneath(found):
            return verified
        for c in lists.values():
            c["verified"] = found
        looked, lost = self._fan_out(one, options, lists, "verify", 0)
        missing.update(lost)
        aligned = [
            ((s, h["id"]), h["beneath"])
            for s, a in looked
            if not isinstance(a[0][0], str)
            for h in a[0][0]
            if h.get("beneath") is not None
        ]
        pick = _imgvec.beneath_pick([(i, float(v)) for i, (_, v) in enumerate(aligned)])
        if pick is None:
            return looked
        shard, row = aligned[pick][0]
        lists[shard]["beneath"] = row
        return looked

    def search(self, query: Any, **options: Any) -> Union[ShardedResults, List[ShardedResults]]:
        """``Database.search`` over every shard (images only: ids belong to one shard). Every
        option works and is applied as one database applies it: results, scores and verdicts
        equal those of one database holding every row (docs/RAY.md says where they may not)."""
        batch = isinstance(query, list)
        queries = list(query) if batch else [query]
        natives: List[Any] = []
        for q in queries:
            n = _native(q)
            if isinstance(n, int):
                raise InvalidArgument("a sharded search takes images; an id names a row of one shard")
            natives.append(n)
        k = int(options.get("k", 10))
        # The upright fallback as one database runs it (engine search/upright.rs), over the
        # merged answers: the engine says whether it is on and what counts as a match.
        by = self._featurizer._native.upright_fallback(_search_options(**options))
        augment = options.get("augment") or self._augment_default
        base = dict(options, upright=False)
        answers, missing, made = self._pass(natives, base, k)
        if by is not None and augment == "none":
            again = [i for i, a in enumerate(answers) if not isinstance(a, str) and not _found(a, by)]
            if again:
                # The turns change only the vectors: the upright pass's local features are reused.
                like = [made[i] for i in again]
                turned, lost, _ = self._pass([natives[i] for i in again], dict(base, augment="rot4"), k, like)
                missing.update(lost)
                for i, a in zip(again, turned):
                    if not isinstance(a, str) and _keeps_turns(a, by):
                        answers[i] = a
        results = [self._results(q, a, missing) for q, a in zip(queries, answers)]
        if batch:
            return results
        return results[0].raise_for_error()  # type: ignore[return-value]

    def _results(self, q: Any, answer: Any, missing: Dict[str, str]) -> ShardedResults:
        label = q if isinstance(q, str) else os.fspath(q) if isinstance(q, os.PathLike) else f"<{type(q).__name__}>"
        if isinstance(answer, str):
            r = ShardedResults(label, [], error=Error(answer))
        else:
            hits = [ShardHit(**dict(h, rank=i + 1)) for i, h in enumerate(answer)]
            r = ShardedResults(label, hits)
        r.answered = [d for _, d, _ in self._actors if d not in missing]
        r.missing = missing
        return r
