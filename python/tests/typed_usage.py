"""Type-checked by mypy --strict in the tests (test_types.py): the public API as a user calls it."""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import numpy.typing as npt

import imgvec


def usage(path: str, query: str) -> None:
    with imgvec.Database(path, pipeline="fast") as db:
        summary: imgvec.Summary = db.ingest([query], attrs={"a": "b"}, progress=False)
        n: int = summary.stored
        one: imgvec.Results = db.search(query, k=3, mode="exact", filter={"attrs": {"a": "b"}})
        many: List[imgvec.Results] = db.search([query, 1], k=2)
        hit: imgvec.Hit = one[0]
        verdict: Optional[str] = hit.verdict
        score: float = hit.score + n
        vectors: npt.NDArray[np.float32] = db.vectors()
        rec: Optional[imgvec.Record] = db.get(hit.id)
        new_id: int = db.insert(np.zeros((8, 8, 3), np.uint8), key="zeros")
        gone: List[int] = db.delete([new_id])
        for event in db.ingest_events(query):
            status: str = event.status
        print(verdict, score, vectors.shape, rec, gone, many, status)
