"""Typed results: :class:`Hit`, :class:`Results`, :class:`Record`, :class:`IngestEvent` and
:class:`Summary`. ``Results`` shows its query and hits as thumbnails in Jupyter."""

from __future__ import annotations

import base64
import html
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, overload

if TYPE_CHECKING:  # pragma: no cover
    import pandas


@dataclass(frozen=True)
class Hit:
    """One result of a search, best first (``rank`` 1 is the best)."""

    rank: int
    id: int
    path: str
    #: Cosine similarity of the global vectors (re-ranked by verification where it ran).
    score: float
    #: ``"verified"`` (enough SIFT inliers agree on one geometry), ``"aligned"`` (dense
    #: alignment found the same picture), ``"unverified"`` (checked, no evidence), or None when
    #: this search did not verify (pipelines without local features, or ``verify=0``).
    verdict: Optional[str]
    #: Spatially verified SIFT inliers, when this hit was matched.
    inliers: Optional[int]
    #: Dense alignment (normalised cross-correlation, -1..1), when this hit was aligned.
    alignment: Optional[float]
    attrs: Dict[str, str] = field(default_factory=dict)
    #: Is this the same image? ``"verified"`` (local evidence confirmed it), ``"likely"``
    #: (calibrated confidence >= 0.5 without that evidence) or ``"none"`` (docs/CALIBRATION.md).
    match: str = "none"
    #: Estimated probability that this hit shows the same source as the query, calibrated per
    #: preset so it compares across presets (None for custom models).
    confidence: Optional[float] = None
    #: Aligned hits: where the query lies in this image, (left, top, right, bottom) as fractions.
    region: Optional[List[float]] = None
    #: With ``search(..., pairs=True)``, verified hits: some inlier pairs (query x, y, hit x, y),
    #: each a fraction of its image's width or height.
    pairs: Optional[List[List[float]]] = None
    #: The key verification ordered this hit by among the candidates it checked (None when it
    #: checked none); sharded searches merge by it.
    rank_key: Optional[float] = None
    #: Hits SIFT matched with ``min_inliers`` inliers or more (verified, or a picture pasted over
    #: too little of the query to verify): the share of the query this image covers under the
    #: fitted transform, and
    #: the box of that part of the query, (left, top, right, bottom) as fractions.
    coverage: Optional[float] = None
    footprint: Optional[List[float]] = None
    #: Its alignment with the query with the verified hits' footprints left out, when the
    #: search looked beneath pictures pasted over the query (docs/SEARCH.md).
    beneath: Optional[float] = None
    #: The ranking tier verification gave it: 2 what the query shows beneath pictures pasted
    #: over it, 1 verified, 0 checked otherwise (None: not checked); sharded searches merge by
    #: (tier, rank_key).
    tier: Optional[int] = None

    @property
    def is_match(self) -> bool:
        """``match`` is ``"verified"`` or ``"likely"``: the same image, as far as imgvec can tell."""
        return self.match != "none"


@dataclass(frozen=True)
class Record:
    """What the database stores about one image."""

    id: int
    path: str
    content_hash: str
    width: int
    height: int
    format: str
    ingested_at_ms: int
    attrs: Dict[str, str]
    #: Another row with byte-identical content when this one was stored.
    duplicate_of: Optional[int] = None


@dataclass(frozen=True)
class IngestEvent:
    """One image's outcome, reported once it is durable (or failed)."""

    path: str
    #: ``"stored"``, ``"unchanged"``, ``"replaced"`` or ``"error"``.
    status: str
    id: Optional[int] = None
    error: Optional[str] = None
    duplicate_of: Optional[int] = None
    replaced_id: Optional[int] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "IngestEvent":
        return cls(
            path=d["path"],
            status=d["status"],
            id=d.get("id"),
            error=d.get("error"),
            duplicate_of=d.get("duplicate_of"),
            replaced_id=d.get("replaced_id"),
        )


@dataclass(frozen=True)
class Summary:
    """The totals of one ingest."""

    stored: int
    unchanged: int
    replaced: int
    #: Files not ingested because they are not images (or not regular files).
    skipped: int
    errors: int
    duplicates: int
    seconds: float
    images_per_sec: float
    #: Stopped early (Ctrl-C or ``stop()``); everything reported before is durable.
    interrupted: bool
    #: Seconds per ingest stage, summed over threads.
    stages: Dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Summary":
        stages = {k: float(v) for k, v in dict(d.get("stages") or {}).items() if isinstance(v, (int, float))}
        return cls(
            stored=d["stored"],
            unchanged=d["unchanged"],
            replaced=d["replaced"],
            skipped=d["skipped"],
            errors=d["errors"],
            duplicates=d["duplicates"],
            seconds=d["seconds"],
            images_per_sec=d["images_per_sec"],
            interrupted=d["interrupted"],
            stages=stages,
        )


def _img_tag(data: Optional[bytes], title: str, size: int) -> str:
    if not data:
        return f'<div style="width:{size}px;height:{size}px;background:#eee"></div>'
    mime = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
    b64 = base64.b64encode(data).decode("ascii")
    return (
        f'<img src="data:{mime};base64,{b64}" title="{html.escape(title)}" '
        f'style="max-width:{size}px;max-height:{size}px;object-fit:contain">'
    )


_VERDICT_COLOURS = {"verified": "#1b7f3b", "aligned": "#2f6db5", "unverified": "#888"}


class Results(Sequence[Hit]):
    """The hits of one query, best first. In Jupyter it renders as the query and its hits as
    thumbnails, each with its score and verdict."""

    def __init__(
        self,
        query: str,
        hits: Sequence[Hit],
        error: Optional[BaseException] = None,
        thumbnail: Optional[Callable[[int], Optional[bytes]]] = None,
        query_image: Optional[Callable[[], Optional[bytes]]] = None,
    ) -> None:
        #: The query as given (a path, ``id:N``, or a description of bytes or an array).
        self.query = query
        self.hits: List[Hit] = list(hits)
        #: Why this query failed (in a batch, one bad query does not fail the others).
        self.error = error
        self._thumbnail = thumbnail
        self._query_image = query_image

    @overload
    def __getitem__(self, i: int) -> Hit: ...

    @overload
    def __getitem__(self, i: slice) -> List[Hit]: ...

    def __getitem__(self, i: Any) -> Any:
        return self.hits[i]

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Results(query={self.query!r}, error={self.error!r})"
        top = ", ".join(f"{h.id}:{h.score:.3f}" for h in self.hits[:3])
        more = ", ..." if len(self.hits) > 3 else ""
        return f"Results(query={self.query!r}, {len(self.hits)} hits: [{top}{more}])"

    @property
    def ids(self) -> List[int]:
        return [h.id for h in self.hits]

    @property
    def paths(self) -> List[str]:
        return [h.path for h in self.hits]

    def raise_for_error(self) -> "Results":
        """Raises the query's error, if it failed; returns itself otherwise."""
        if self.error is not None:
            raise self.error
        return self

    def to_pandas(self) -> "pandas.DataFrame":
        """The hits as a DataFrame (one row per hit; needs pandas)."""
        try:
            import pandas
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("Results.to_pandas() needs pandas: pip install pandas") from e
        self.raise_for_error()
        rows = [dict(asdict(h), query=self.query) for h in self.hits]
        columns = [
            "query", "rank", "id", "path", "score", "match", "confidence", "verdict", "inliers", "alignment",
            "attrs",
        ]
        return pandas.DataFrame(rows, columns=columns)

    def _repr_html_(self) -> str:
        q = html.escape(self.query)
        if self.error is not None:
            return f"<div><b>{q}</b>: <span style='color:#b00'>{html.escape(str(self.error))}</span></div>"
        query_img = self._query_image() if self._query_image else None
        cells = [
            "<div style='display:inline-block;margin:4px;text-align:center;vertical-align:top;"
            "border:2px solid #333;padding:2px'>"
            f"{_img_tag(query_img, self.query, 160)}<br><small>query</small></div>"
        ]
        for h in self.hits:
            colour = _VERDICT_COLOURS.get(h.verdict or "", "#ccc")
            thumb = self._thumbnail(h.id) if self._thumbnail else None
            evidence = ""
            if h.inliers is not None:
                evidence = f" · {h.inliers} inliers"
            elif h.alignment is not None:
                evidence = f" · align {h.alignment:.2f}"
            label = html.escape(h.verdict or h.match)
            if h.confidence is not None:
                label += f" · {h.confidence:.0%}"
            cells.append(
                "<div style='display:inline-block;margin:4px;text-align:center;vertical-align:top;"
                f"border:2px solid {colour};padding:2px'>"
                f"{_img_tag(thumb, h.path, 160)}<br>"
                f"<small>#{h.rank} id {h.id} · {h.score:.3f}{evidence}<br>"
                f"<b style='color:{colour}'>{label}</b></small></div>"
            )
        return f"<div><div><b>{q}</b></div>{''.join(cells)}</div>"


__all__ = ["Hit", "Record", "IngestEvent", "Summary", "Results"]
