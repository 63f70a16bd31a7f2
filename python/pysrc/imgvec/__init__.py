"""imgvec: an embedded vector database for images, in-process.

>>> import imgvec
>>> with imgvec.Database("photos.imgvec", pipeline="fast") as db:
...     db.ingest(["holiday-photos/"])
...     for hit in db.search("query.jpg", k=5):
...         print(hit.rank, hit.score, hit.path)

The engine is the Rust crate (the same one the ``imgvec`` CLI runs): ingest, search and
extraction release the GIL, and one :class:`Database` may be shared by many Python threads.
"""

from __future__ import annotations

import os

# libgomp (libtorch's OpenMP) reads this once, when the native module loads it: passive waiting
# keeps idle worker threads off the CPU (the CLI sets it the same way).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import functools  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
from dataclasses import dataclass  # noqa: E402
import sys  # noqa: E402
import weakref  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import (  # noqa: E402
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    overload,
)

import numpy as np  # noqa: E402

from . import _imgvec  # noqa: E402
from ._errors import CorruptionError, Error, ImageError, InvalidArgument, LockedError  # noqa: E402
from ._results import Hit, IngestEvent, Record, Results, Summary  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    import numpy.typing as npt
    import PIL.Image

__version__: str = _imgvec.__version__

PathLike = Union[str, "os.PathLike[str]"]
#: An image: a file path, encoded bytes, a uint8 array (H×W, H×W×3 or H×W×4) or a PIL image.
ImageLike = Union[PathLike, bytes, np.ndarray, "PIL.Image.Image"]
#: A query: an image, the id of a stored image ("more like this"), or an image's features.
QueryLike = Union[ImageLike, int, "QueryFeatures"]

PRESETS = ("fast", "balanced", "robust", "robust-vlad")
MODES = ("exact", "ivfpq", "hamming", "hamming-ivf")


#: A query as the native module takes it: an id, a path, encoded bytes, or ("features", bytes).
_Native = Union[int, str, bytes, Tuple[str, bytes]]


@dataclass(frozen=True)
class QueryFeatures:
    """An image query featurized once (:meth:`Database.featurize`): search it, with the same
    options, in that database or any made :meth:`~Database.create_like` it — the shards of one
    collection get the query's features instead of each running the model on it."""

    data: bytes


def _is_pil(x: object) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "convert")


def _native(q: Any) -> _Native:
    """A query or image as the native module takes it: an id, a path or encoded bytes."""
    if isinstance(q, QueryFeatures):
        return ("features", q.data)
    if isinstance(q, bool):
        raise InvalidArgument("a query is a path, bytes, an image array, a PIL image or an id, not a bool")
    if isinstance(q, (int, np.integer)):
        if q < 0:
            raise InvalidArgument(f"ids are not negative: {q}")
        return int(q)
    if isinstance(q, (str, os.PathLike)):
        return os.fspath(q)
    if isinstance(q, (bytes, bytearray, memoryview)):
        return bytes(q)
    if isinstance(q, np.ndarray):
        if q.dtype != np.uint8:
            raise InvalidArgument(f"an image array must be uint8, not {q.dtype}")
        return bytes(_imgvec.encode_array(np.ascontiguousarray(q)))
    if _is_pil(q):
        return bytes(_imgvec.encode_array(np.asarray(q.convert("RGB"))))
    raise InvalidArgument(
        f"a query is a path, bytes, an image array, a PIL image or an id, not {type(q).__name__}"
    )


def _label(q: Any, native: _Native) -> str:
    if isinstance(native, int):
        return f"id:{native}"
    if isinstance(native, tuple):
        return "<features>"
    if isinstance(native, str):
        return native
    if isinstance(q, np.ndarray):
        return f"<array {'×'.join(map(str, q.shape))}>"
    if _is_pil(q):
        return f"<PIL image {q.size[0]}×{q.size[1]}>"
    return f"<{len(native)} bytes>"


class _Progress:
    """A progress bar: tqdm (``tqdm.auto``, so notebooks get a widget) when installed, else a
    one-line bar on a terminal's stderr, else nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self._tqdm, self._text = total, 0, None, False
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm

            self._tqdm = tqdm(total=total, unit="img", desc="ingest")
        except ImportError:
            self._text = sys.stderr.isatty()

    def update(self, event: IngestEvent) -> None:
        self.done += 1
        if event.error:
            self.write(f"error: {event.path}: {event.error}")
        if self._tqdm is not None:
            self._tqdm.update(1)
        elif self._text:
            width = 40
            filled = width * self.done // max(self.total, 1)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} images")
            sys.stderr.flush()

    def write(self, line: str) -> None:
        if self._tqdm is not None:
            self._tqdm.write(line, file=sys.stderr)
        elif self._text:
            sys.stderr.write("\r" + line + "\n")

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._text:
            sys.stderr.write("\n")


class IngestRun(Iterator[IngestEvent]):
    """A running ingest (from :meth:`Database.ingest_events`): iterate it for each image's
    :class:`IngestEvent` as it becomes durable. ``summary`` is set once it is exhausted.
    Ctrl-C while iterating stops after the images in flight are durable, then raises
    ``KeyboardInterrupt``; :meth:`stop` does the same without raising."""

    def __init__(self, native: Any) -> None:
        self._native = native
        # An ingest left running (the iterator dropped, or the interpreter exiting) is stopped
        # after the images in flight are durable, never cut off.
        self._finalizer = weakref.finalize(self, native.stop)

    @property
    def total(self) -> int:
        """Images the walk found (and paths it could not read)."""
        return int(self._native.total)

    @property
    def summary(self) -> Optional[Summary]:
        raw = self._native.summary
        return None if raw is None else Summary.from_json(json.loads(raw))

    def __iter__(self) -> "IngestRun":
        return self

    def __next__(self) -> IngestEvent:
        raw = next(self._native)
        return IngestEvent.from_json(json.loads(raw))

    def stop(self) -> Optional[Summary]:
        """Stops after the images in flight are durable; returns the summary."""
        self._native.stop()
        return self.summary


def _filter(filter: Union[None, str, Mapping[str, Any]]) -> Dict[str, Any]:
    """`filter`: None, a path prefix, or ``{"path_prefix": ..., "attrs": {...}}``."""
    if filter is None:
        return {"path_prefix": None, "attrs": {}}
    if isinstance(filter, (str, os.PathLike)):
        filter = {"path_prefix": os.fspath(filter)}
    unknown = set(filter) - {"path_prefix", "attrs"}
    if unknown:
        raise InvalidArgument(f"unknown filter keys {sorted(unknown)} (use path_prefix, attrs)")
    prefix = filter.get("path_prefix")
    if prefix is not None:
        prefix = os.fspath(prefix)
        # Stored paths are absolute: a relative prefix naming something that exists means it.
        if not os.path.isabs(prefix) and os.path.exists(prefix):
            prefix = os.path.abspath(prefix) + (os.sep if prefix.endswith(os.sep) else "")
    attrs = {str(k): str(v) for k, v in dict(filter.get("attrs") or {}).items()}
    return {"path_prefix": prefix, "attrs": attrs}


@functools.lru_cache(maxsize=None)
def _search_defaults() -> Dict[str, Any]:
    """``Database.search``'s keyword-only parameters and their defaults."""
    params = inspect.signature(Database.search).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _search_options(**given: Any) -> Dict[str, Any]:
    """The options of ``Database.search`` (and ``featurize``, ``candidates``), checked, as the
    native module takes them. ``Database.search``'s keyword-only parameters are the one list of
    options and their defaults; any other keyword is refused as Python refuses it."""
    defaults = _search_defaults()
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise TypeError(f"unexpected search option {unknown[0]!r}")
    o = {n: given.get(n, default) for n, default in defaults.items()}
    if o["k"] < 1:
        raise InvalidArgument(f"k must be at least 1, not {o['k']}")
    threshold = o["threshold"]
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise InvalidArgument(f"threshold is a cosine score in -1..1, not {threshold}")
    rows = o["collection_rows"]
    if rows is not None and rows < 1:
        raise InvalidArgument(f"collection_rows must be at least 1, not {rows}")
    if o["expand_with"] is not None:
        o["expand_with"] = [float(x) for x in o["expand_with"]]
    if o["candidates"] is not None:
        o["candidates"] = json.dumps(o["candidates"])
    where = _filter(o.pop("filter"))
    return {**o, **where}


class Database:
    """An imgvec database folder, open in this process.

    ``pipeline`` chooses the feature pipeline of a new database (``"fast"`` by default, or
    ``"balanced"``, ``"robust"``, ``"robust-vlad"``); an existing database keeps its own.
    ``model`` (a TorchScript file) is a custom extractor on its own, or with ``"balanced"`` /
    ``"robust"`` / ``"robust-vlad"`` that preset's CNN replaced, e.g. by a model
    ``imgvec train contrastive`` fine-tuned on the collection.
    ``read_only`` handles take no lock and may run beside the one writer. Use it as a context
    manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        pipeline: Optional[str] = None,
        read_only: bool = False,
        threads: Optional[int] = None,
        create: bool = True,
        model: Optional[PathLike] = None,
    ) -> None:
        self._native = _imgvec.NativeDatabase(
            os.fspath(path),
            pipeline=pipeline,
            read_only=read_only,
            threads=threads,
            create=create,
            model=None if model is None else os.fspath(model),
        )
        self.read_only = read_only

    @staticmethod
    def exists(path: PathLike) -> bool:
        """Whether ``path`` holds an imgvec database (nothing is opened or created)."""
        return bool(_imgvec.exists(os.fspath(path)))

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the handle; a writer's data is durable and its lock released."""
        self._native.close()

    @property
    def closed(self) -> bool:
        return bool(self._native.closed)

    @property
    def path(self) -> str:
        return str(self._native.path)

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<imgvec.Database (closed)>"
        mode = "read-only" if self.read_only else "read-write"
        return f"<imgvec.Database {self.path!r} {mode}>"

    # -- writing -----------------------------------------------------------------------------

    def ingest_events(
        self,
        paths: Union[PathLike, Iterable[PathLike]],
        *,
        attrs: Optional[Mapping[str, str]] = None,
        follow_links: bool = False,
    ) -> IngestRun:
        """Starts ingesting the images in ``paths`` (files or folders, walked recursively) and
        returns an iterator of their events. Re-running it skips what is already stored."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        native = self._native.ingest_stream(
            [os.fspath(p) for p in paths], {str(k): str(v) for k, v in (attrs or {}).items()}, follow_links
        )
        return IngestRun(native)

    def ingest(
        self,
        paths: Union[PathLike, Iterable[PathLike]],
        *,
        attrs: Optional[Mapping[str, str]] = None,
        progress: bool = True,
        follow_links: bool = False,
        on_event: Optional[Callable[[IngestEvent], None]] = None,
    ) -> Summary:
        """Ingests the images in ``paths`` (files or folders) with a progress bar; bad images
        are reported and skipped. Ctrl-C stops cleanly: what was acknowledged stays stored, and
        running the same call again resumes."""
        run = self.ingest_events(paths, attrs=attrs, follow_links=follow_links)
        bar = _Progress(run.total, progress)
        try:
            for event in run:
                bar.update(event)
                if on_event is not None:
                    on_event(event)
        except BaseException:
            # Ctrl-C (or an error in on_event) anywhere in this loop: what is in flight is made
            # durable before the exception goes on; running the same call again resumes.
            run.stop()
            bar.write("interrupted: what was acknowledged is stored; run the same ingest again to resume")
            raise
        finally:
            bar.close()
        summary = run.summary
        if summary is None:  # pragma: no cover - the stream always ends with one
            raise Error("the ingest ended without a summary")
        return summary

    def insert(
        self,
        image: ImageLike,
        *,
        key: Optional[str] = None,
        attrs: Optional[Mapping[str, str]] = None,
    ) -> int:
        """Stores one image and returns its id once it is durable. A file needs no ``key``
        (its canonical path is its key); bytes, arrays and PIL images need one."""
        attrs_ = {str(k): str(v) for k, v in (attrs or {}).items()}
        if isinstance(image, (str, os.PathLike)) and key is None:
            return int(self._native.insert(os.fspath(image), None, attrs_))
        if key is None:
            raise InvalidArgument("inserting bytes, an array or a PIL image needs key=")
        data = _native(image)
        if isinstance(data, str):
            data = Path(data).read_bytes()
        if isinstance(data, int):
            raise InvalidArgument("insert takes an image, not an id")
        return int(self._native.insert(data, key, attrs_))

    # -- shards (imgvec.ray) --------------------------------------------------------------------

    def create_like(self, path: PathLike, *, threads: Optional[int] = None) -> "Database":
        """A new, empty database at ``path`` that makes and scores rows exactly as this one:
        the same pipeline and model, and this database's learned whitening, frozen there. The
        shards of one collection are made like one database that learned on a sample of it."""
        db = Database.__new__(Database)
        db._native = self._native.create_like(os.fspath(path), threads=threads)
        db.read_only = False
        return db

    def prepare(
        self,
        images: Iterable[Union[PathLike, Tuple[str, bytes]]],
        *,
        attrs: Optional[Mapping[str, str]] = None,
    ) -> Tuple[List[Tuple[str, bytes]], List[IngestEvent]]:
        """Makes images (files, or ``(key, bytes)`` pairs) into rows with this database's
        pipeline and stores nothing: each row as ``(key, bytes)`` (a file's key is its canonical
        path), for :meth:`commit_prepared` of a database made :meth:`create_like` this one, and
        the images that failed."""
        items: List[Any] = [
            (str(i[0]), bytes(i[1])) if isinstance(i, tuple) else os.fspath(i) for i in images
        ]
        attrs_ = {str(k): str(v) for k, v in (attrs or {}).items()}
        rows, failed = self._native.prepare(items, attrs_)
        return [(str(k), bytes(b)) for k, b in rows], [IngestEvent.from_json(json.loads(e)) for e in failed]

    def commit_prepared(self, rows: Iterable[bytes]) -> Tuple[Summary, List[IngestEvent]]:
        """Stores rows :meth:`prepare` made, durably, as ingest does; returns the summary and
        each row's event (``unchanged`` when the same content is stored under its key)."""
        summary, events = self._native.commit_prepared([bytes(r) for r in rows])
        return Summary.from_json(json.loads(summary)), [IngestEvent.from_json(json.loads(e)) for e in events]

    def space_vectors(self, ids: Iterable[int]) -> List[Optional["npt.NDArray[np.float32]"]]:
        """Each row's vector in the space searches score in (the learned whitening's, once
        there is one); None for an id with no live row."""
        out = self._native.space_vectors([int(i) for i in ids])
        return [None if v is None else np.asarray(v, dtype=np.float32) for v in out]

    def delete(self, ids: Union[int, Iterable[int], None] = None, *, paths: Optional[Iterable[PathLike]] = None) -> List[int]:
        """Deletes rows by id and/or by file (named as you would name it); returns the ids that
        were live. Deleted rows never appear in results again."""
        wanted: List[int] = []
        if isinstance(ids, int):
            wanted.append(ids)
        elif ids is not None:
            wanted.extend(int(i) for i in ids)
        for p in paths or []:
            rec = self._native.get_by_file(os.fspath(p))
            if rec is None:
                raise InvalidArgument(f"{os.fspath(p)}: not in the database", )
            wanted.append(int(rec["id"]))
        return [int(i) for i in self._native.delete(wanted)]

    def preload(self) -> None:
        """Starts loading, in the background, the indexes that verified searches (``robust``)
        read first, and returns at once: a process that opens a database to search it loads them
        while it reads and featurizes its first queries. Results are the same without it."""
        self._native.preload()

    def compact(self) -> Dict[str, Any]:
        """Seals pending rows and rewrites segments without deleted rows."""
        return dict(json.loads(self._native.compact()))

    # -- reading -----------------------------------------------------------------------------

    @overload
    def search(self, query: QueryLike, **options: Any) -> Results: ...

    @overload
    def search(self, query: List[QueryLike], **options: Any) -> List[Results]: ...

    def search(
        self,
        query: Union[QueryLike, List[QueryLike]],
        *,
        k: int = 10,
        mode: str = "exact",
        filter: Union[None, str, Mapping[str, Any]] = None,
        verify: Optional[int] = None,
        matches_only: bool = False,
        pairs: bool = False,
        threshold: Optional[float] = None,
        qe: Optional[int] = None,
        augment: Optional[str] = None,
        nprobe: Optional[int] = None,
        rerank: bool = True,
        rerank_depth: Optional[int] = None,
        dense: Optional[int] = None,
        alignment_floor: Optional[float] = None,
        min_inliers: Optional[int] = None,
        inlier_px: Optional[float] = None,
        min_coverage: Optional[float] = None,
        expand: Optional[int] = None,
        upright: Optional[bool] = None,
        expand_with: Optional[Sequence[float]] = None,
        candidates: Optional[Mapping[str, Any]] = None,
        collection_rows: Optional[int] = None,
    ) -> Union[Results, List[Results]]:
        """The ``k`` stored images most like ``query`` (an image or a stored id), best first.

        A list of queries runs as one batch and returns one :class:`Results` per query (a
        failed query's ``error`` is set; the others are answered). ``mode``: ``"exact"``,
        ``"ivfpq"``, ``"hamming"``, ``"hamming-ivf"``. ``filter``: a path prefix, or
        ``{"path_prefix": ..., "attrs": {...}}``. ``nprobe``, ``rerank``, ``rerank_depth``: the
        approximate modes' lists probed, and whether (and from how many candidates per row)
        their hits are re-ranked by exact distance (``--no-rerank``, ``--rerank-depth``).
        ``verify``: how many candidates spatial
        verification checks (pipelines with local features; 0 = off). ``matches_only``: only
        hits whose ``match`` is ``"verified"`` or ``"likely"`` (calibrated per preset). ``pairs``: give
        verified hits some inlier pairs to draw (``Hit.pairs``). ``dense``, ``alignment_floor``,
        ``min_inliers``, ``inlier_px``, ``min_coverage``: the verification settings of the CLI's
        flags of the same names (docs/SEARCH.md, "Options"). ``expand``: verified query
        expansion with the best N verified hits (0 = off); ``upright``: search a query whose
        answer holds no match (nothing verified; without verification, nothing calibrated
        ``likely``) again with its turns (on in ``robust`` and ``balanced``). ``expand_with``: expand with this sum of
        :meth:`space_vectors` instead of the query's own verified hits (sharded search,
        :mod:`imgvec.ray`). ``candidates``: verify only these (a shard's rows of its
        collection's merged :meth:`candidates`). ``collection_rows``: this database is a shard
        of a collection of that many rows; dense-window search measures its share of the rows it
        rates best, not one database's whole budget (:mod:`imgvec.ray`, docs/RAY.md).
        """
        # The keywords, by the names of this signature (the one list of search options).
        options = _search_options(**{n: v for n, v in locals().items() if n not in ("self", "query")})
        batch = isinstance(query, list)
        queries: List[Any] = list(query) if isinstance(query, list) else [query]
        natives = [_native(q) for q in queries]
        answers = self._native.search(natives, options)
        results = [self._results(q, n, a) for q, n, a in zip(queries, natives, answers)]
        if batch:
            return results
        return results[0].raise_for_error()

    def _results(self, q: Any, native: _Native, answer: Any) -> Results:
        label = _label(q, native)
        query_image = self._query_image(native)
        if isinstance(answer, BaseException):
            return Results(label, [], error=answer)
        hits = [
            Hit(
                rank=i + 1,
                id=int(h["id"]),
                path=h["path"],
                score=float(h["score"]),
                verdict=h["verdict"],
                rank_key=h["rank_key"],
                inliers=h["inliers"],
                alignment=h["alignment"],
                attrs=dict(h["attrs"]),
                match=h["match"],
                confidence=h["confidence"],
                region=h["region"],
                pairs=h["pairs"],
                coverage=h["coverage"],
                footprint=h["footprint"],
                beneath=h["beneath"],
                tier=h["tier"],
            )
            for i, h in enumerate(answer)
        ]
        return Results(label, hits, thumbnail=self.thumbnail, query_image=query_image)

    def _query_image(self, native: _Native) -> Callable[[], Optional[bytes]]:
        if isinstance(native, int):
            return lambda: self.thumbnail(native)
        if isinstance(native, bytes):
            return lambda: native
        if isinstance(native, tuple):
            return lambda: None
        path = native

        def read() -> Optional[bytes]:
            try:
                return Path(path).read_bytes()
            except OSError:
                return None

        return read

    def featurize(self, queries: Union[ImageLike, List[ImageLike]], **options: Any) -> Any:
        """What a search with ``options`` makes of each image query (its augmentation variants'
        vectors and, when the search verifies, its local features), as :class:`QueryFeatures`
        (a list for a list). Search them with the same options here or in a database made
        :meth:`create_like` this one; a query that cannot be read raises :class:`ImageError`."""
        batch = isinstance(queries, list)
        items = list(queries) if isinstance(queries, list) else [queries]
        natives = [_native(q) for q in items]
        answers = self._native.featurize(natives, _search_options(**options))
        out = []
        for a in answers:
            if isinstance(a, BaseException):
                raise a
            out.append(QueryFeatures(bytes(a)))
        return out if batch else out[0]

    def candidates(self, queries: List[QueryLike], **options: Any) -> List[Union[Dict[str, Any], BaseException]]:
        """What verifying each query with ``options`` would examine, without examining it: a dict
        of lists, best first — ``shortlist`` (id, score), ``voted`` (id, votes), ``dense`` (id,
        window score) — with ``turns`` (id, degrees) and ``asked`` (each list's size); empty
        lists when the search does not verify. With ``expand_with``, only ``expanded``: the
        expanded query's top rows (id, score). A query that fails is its exception. The shards
        of one collection merge theirs, and each verifies its rows of the merge
        (``search(..., candidates=...)``; :mod:`imgvec.ray`)."""
        answers = self._native.candidates([_native(q) for q in queries], _search_options(**options))
        return [a if isinstance(a, BaseException) else json.loads(a) for a in answers]

    def extract(self, images: Union[QueryLike, Sequence[QueryLike]]) -> np.ndarray:
        """The pipeline's global vectors of ``images`` (n × dims float32, one row each),
        computed the way ingest computes them, without storing anything. An id gives its stored
        vector."""
        items: List[Any] = list(images) if isinstance(images, (list, tuple)) else [images]
        return np.asarray(self._native.extract([_native(i) for i in items]))

    def vectors(self, ids: Optional[Iterable[int]] = None, *, return_ids: bool = False) -> Any:
        """The stored vectors of ``ids`` (every live row, by id, when None) as an n × dims
        float32 array; with ``return_ids``, ``(ids, vectors)``. Every live row of a compacted
        database (one segment, nothing pending or deleted) comes as a read-only view of the
        memory-mapped segment, without a copy; otherwise the rows are copied."""
        got_ids, vectors = self._native.vectors(None if ids is None else [int(i) for i in ids])
        return (np.asarray(got_ids), np.asarray(vectors)) if return_ids else np.asarray(vectors)

    def get(self, id: int) -> Optional[Record]:
        """The record of a live row, or None."""
        rec = self._native.get(int(id))
        return None if rec is None else Record(**rec)

    def get_by_file(self, path: PathLike) -> Optional[Record]:
        """The record of a file as you would name it (relative, through links, or removed)."""
        rec = self._native.get_by_file(os.fspath(path))
        return None if rec is None else Record(**rec)

    def records(self) -> List[Record]:
        """Every live row's record."""
        return [Record(**r) for r in self._native.records()]

    def __len__(self) -> int:
        return int(self.info()["live_rows"])

    def thumbnail(self, id: int) -> Optional[bytes]:
        """The stored thumbnail (JPEG, at most 256 px a side) of a row."""
        data = self._native.thumbnail(int(id))
        return None if data is None else bytes(data)

    def info(self) -> Dict[str, Any]:
        """What the database holds (the same fields as ``imgvec info --json``)."""
        return dict(json.loads(self._native.info()))


__all__ = [
    "Database",
    "QueryFeatures",
    "IngestRun",
    "Results",
    "Hit",
    "Record",
    "IngestEvent",
    "Summary",
    "Error",
    "CorruptionError",
    "LockedError",
    "ImageError",
    "InvalidArgument",
    "PRESETS",
    "MODES",
    "ImageLike",
    "QueryLike",
]
