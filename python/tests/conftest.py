"""Shared fixtures: a subset of instances-dev (whole groups, with their queries) and a database
of it ingested once per test session (the `fast` preset, on the real engine)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("IMGVEC_DATASETS", REPO.parent / "shared" / "datasets"))
INSTANCES = DATASETS / "instances-dev"
#: Where scripts/setup.sh puts the models (the engine looks there too).
MODELS = Path(os.environ.get("IMGVEC_MODEL_DIR") or Path.home() / ".local/share/imgvec/models")
#: The trainable base model `imgvec train contrastive` starts from: its maps equal the balanced
#: and robust presets' model's, so a preset with its CNN replaced by it answers as the preset.
BASE_MODEL = MODELS / "mobilenet_v2_maps_train.pt"
#: Groups (an object and its near-identical siblings) in the subset, and unrelated images.
GROUPS = 24
DISTRACTORS = 40


def read_jsonl(path: Path) -> List[Dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def group_of(label: str) -> str:
    return label.split("_")[0]


@pytest.fixture(scope="session")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, List[Dict[str, str]], Dict[str, str]]:
    """(folder of db images, queries [{path, label, case}], label of each db file name)."""
    db = read_jsonl(INSTANCES / "db.jsonl")
    queries = read_jsonl(INSTANCES / "queries.jsonl")
    groups = set(sorted({group_of(q["label"]) for q in queries})[:GROUPS])
    distractors = sorted(r["label"] for r in db if group_of(r["label"]) not in {group_of(q["label"]) for q in queries})
    groups.update(distractors[:DISTRACTORS])
    folder = tmp_path_factory.mktemp("instances") / "db"
    folder.mkdir()
    labels = {}
    for r in db:
        if group_of(r["label"]) in groups:
            name = os.path.basename(r["path"])
            shutil.copy(INSTANCES / r["path"], folder / name)
            labels[name] = r["label"]
    chosen = [
        {**q, "path": str(INSTANCES / q["path"])} for q in queries if group_of(q["label"]) in groups
    ]
    return folder, chosen, labels


@pytest.fixture(scope="session")
def fast_db(subset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `fast` database of the subset, closed (tests open it read-only or copy it)."""
    import imgvec

    folder, _, _ = subset
    path = tmp_path_factory.mktemp("dbs") / "fast"
    with imgvec.Database(path, pipeline="fast") as db:
        summary = db.ingest([folder], progress=False)
    assert summary.errors == 0 and summary.stored == len(os.listdir(folder))
    return path


def recall_at_1(tops: List[str], queries: List[Dict[str, str]], labels: Dict[str, str]) -> float:
    """Share of queries whose first result (a path) carries the query's label."""
    hits = sum(
        1 for top, q in zip(tops, queries) if top and labels.get(os.path.basename(top)) == q["label"]
    )
    return hits / len(queries)
