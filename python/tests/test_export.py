"""`imgvec export` is readable by pandas (Parquet through pyarrow, and JSON lines), and holds the
same vectors as the Python binding."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pandas as pd

import imgvec
from conftest import REPO

IMGVEC_BIN = os.environ.get("IMGVEC_BIN", str(REPO / "target" / "debug" / "imgvec"))


def test_parquet_and_jsonl_exports_read_back_in_pandas(fast_db, tmp_path):
    parquet = tmp_path / "export.parquet"
    jsonl = tmp_path / "export.jsonl"
    for fmt, out in (("parquet", parquet), ("jsonl", jsonl)):
        subprocess.run([IMGVEC_BIN, "export", str(fast_db), "--format", fmt, "--out", str(out)], check=True)
    table = pd.read_parquet(parquet)
    lines = pd.read_json(jsonl, lines=True)
    with imgvec.Database(fast_db, read_only=True) as db:
        records = sorted(db.records(), key=lambda r: r.id)
        assert list(table["id"]) == [r.id for r in records] == list(lines["id"])
        assert list(table["path"]) == [r.path for r in records]
        vectors = db.vectors([r.id for r in records])
    exported = np.stack(table["vector"].to_numpy())
    assert exported.dtype == np.float32 and exported.shape == vectors.shape
    np.testing.assert_allclose(exported, vectors, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.stack(lines["vector"].to_numpy()), vectors, atol=1e-6)
    assert set(table.columns) >= {"width", "height", "format", "content_hash", "attrs", "duplicate_of"}
