"""`import imgvec` on the real engine: retrieval parity with the CLI, every query type, the record
API, numpy vectors, errors, threads, Ctrl-C, and the notebook-facing results."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgvec
from conftest import BASE_MODEL, INSTANCES, REPO, recall_at_1

IMGVEC_BIN = os.environ.get("IMGVEC_BIN", str(REPO / "target" / "debug" / "imgvec"))


def copy_db(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_recall_at_1_matches_the_cli(fast_db, subset):
    _, queries, labels = subset
    paths = [q["path"] for q in queries]
    with imgvec.Database(fast_db, read_only=True) as db:
        results = db.search(paths, k=5)
    assert all(r.error is None for r in results)
    py_tops = [r[0].path if len(r) else "" for r in results]

    out = subprocess.run(
        [IMGVEC_BIN, "search", str(fast_db), *paths, "-k", "5", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    cli_tops = {line["query"]: (line["results"][0]["path"] if line["results"] else "") for line in lines}
    cli = recall_at_1([cli_tops[p] for p in paths], queries, labels)
    py = recall_at_1(py_tops, queries, labels)
    assert abs(py - cli) <= 0.005, (py, cli)
    assert py >= 0.7, py  # the subset is easy for `fast`; a broken binding scores near 0


def test_every_query_type_finds_the_stored_image(fast_db, subset):
    folder, _, _ = subset
    name = sorted(os.listdir(folder))[3]
    path = folder / name
    data = path.read_bytes()
    pil = Image.open(io.BytesIO(data))
    array = np.asarray(pil.convert("RGB"))
    with imgvec.Database(fast_db, read_only=True) as db:
        rec = db.get_by_file(path)
        assert rec is not None and rec.path == str(path.resolve())
        for query in [str(path), path, data, array, pil]:
            res = db.search(query, k=3)
            assert res[0].id == rec.id, (type(query), res)
            assert res[0].rank == 1 and res[0].score > 0.99, (type(query), res)
        grey = db.search(array[:, :, 0].copy(), k=3)  # H×W arrays are grey images
        assert grey[0].id == rec.id
        by_id = db.search(rec.id, k=3)
        assert rec.id not in by_id.ids and len(by_id) == 3  # "more like this" leaves itself out
        assert by_id.query == f"id:{rec.id}"
        # The image itself is a confident match; matches_only keeps exactly the matches.
        assert res[0].match == "likely" and res[0].confidence is not None and res[0].confidence > 0.9
        every = db.search(str(path), k=10)
        only = db.search(str(path), k=10, matches_only=True)
        assert only.ids == [h.id for h in every.hits if h.is_match] and rec.id in only.ids
        assert all(h.confidence is not None and 0 <= h.confidence <= 1 for h in every.hits)


def test_path_bytes_array_and_pil_inputs_give_the_same_vector(fast_db, subset):
    folder, _, _ = subset
    path = folder / sorted(os.listdir(folder))[7]
    pil = Image.open(path)
    with imgvec.Database(fast_db, read_only=True) as db:
        got = db.extract([path, path.read_bytes(), np.asarray(pil.convert("RGB")), pil])
        assert np.array_equal(got[0], got[1])  # the same bytes
        # Arrays and PIL images are the pixels PIL decoded: equal up to JPEG decoders' rounding.
        assert np.allclose(got[0], got[2], atol=2e-3) and np.array_equal(got[2], got[3])


def test_batch_with_a_bad_query_answers_the_others(fast_db, subset, tmp_path):
    folder, _, _ = subset
    good = folder / sorted(os.listdir(folder))[0]
    bad = tmp_path / "not-an-image.jpg"
    bad.write_bytes(good.read_bytes()[:600])  # a truncated JPEG
    with imgvec.Database(fast_db, read_only=True) as db:
        results = db.search([good, bad, 999_999], k=2)
        assert results[0].error is None and len(results[0]) == 2
        assert isinstance(results[1].error, imgvec.ImageError)
        assert results[1].error.path and results[1].error.path.endswith("not-an-image.jpg")
        assert isinstance(results[2].error, imgvec.InvalidArgument)
        with pytest.raises(imgvec.ImageError):
            db.search(bad)


def test_insert_get_filter_delete(fast_db, subset, tmp_path):
    folder, _, _ = subset
    db_path = copy_db(fast_db, tmp_path / "db")
    img = Image.open(folder / sorted(os.listdir(folder))[5]).convert("RGB").rotate(3)
    with imgvec.Database(db_path) as db:
        before = len(db)
        new_id = db.insert(img, key="camera/rotated.png", attrs={"camera": "x100", "year": 2024})
        rec = db.get(new_id)
        assert rec is not None
        assert rec.path == "camera/rotated.png" and rec.attrs == {"camera": "x100", "year": "2024"}
        assert rec.format == "png" and (rec.width, rec.height) == img.size
        assert len(db) == before + 1
        only = db.search(np.asarray(img), k=5, filter={"attrs": {"camera": "x100"}})
        assert only.ids == [new_id] and only[0].attrs["camera"] == "x100"
        assert db.search(np.asarray(img), k=5, filter="camera/").ids == [new_id]
        assert db.delete(new_id) == [new_id]
        assert db.get(new_id) is None
        assert new_id not in db.search(np.asarray(img), k=10).ids
        # A file keeps its canonical path as its key; deleting it by a relative name works too.
        fid = db.insert(folder / sorted(os.listdir(folder))[6], attrs={"k": "v"})
        os.chdir(folder)
        assert db.delete(paths=[sorted(os.listdir(folder))[6]]) == [fid]
        with pytest.raises(imgvec.InvalidArgument):
            db.insert(np.zeros((8, 8, 3), np.uint8))  # no key
        report = db.compact()
        assert "segments_merged" in report


def test_vectors_and_extract(fast_db, subset):
    folder, _, _ = subset
    with imgvec.Database(fast_db, read_only=True) as db:
        ids, vectors = db.vectors(return_ids=True)
        n = len(os.listdir(folder))
        assert vectors.shape[0] == n == len(ids) and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
        first = db.get(int(ids[0]))
        assert first is not None
        extracted = db.extract(first.path)
        assert extracted.shape == (1, vectors.shape[1])
        assert float(extracted[0] @ vectors[0]) > 0.999
        two = db.vectors([int(ids[1]), int(ids[0])])
        assert np.array_equal(two[1], vectors[0])
        both = db.extract([first.path, int(ids[1])])
        assert both.shape == (2, vectors.shape[1]) and np.allclose(both[1], vectors[1])
        with pytest.raises(imgvec.InvalidArgument):
            db.vectors([10**9])


def test_vectors_are_a_zero_copy_view_of_a_compacted_database(fast_db, tmp_path):
    db_path = copy_db(fast_db, tmp_path / "db")
    with imgvec.Database(db_path) as db:
        db.compact()  # every row in one segment, nothing pending
    db = imgvec.Database(db_path, read_only=True)
    ids, mapped = db.vectors(return_ids=True)
    assert not mapped.flags.owndata and not mapped.flags.writeable  # a view of the memory map
    with pytest.raises(ValueError):
        mapped[0, 0] = 1.0
    copied = db.vectors([int(i) for i in ids])  # row by row, through get()'s path
    assert copied.flags.writeable and np.array_equal(mapped, copied)  # a copy of its own
    first = mapped[0].copy()
    db.close()
    assert np.array_equal(mapped[0], first)  # the array keeps its segment mapped
    with imgvec.Database(db_path) as writer:
        writer.delete(int(ids[0]))
        rest = writer.vectors()  # deleted rows still sit in the segment: a copy without them
        assert rest.flags.writeable and len(rest) == len(ids) - 1
        assert np.array_equal(rest, copied[1:])


def test_errors_are_typed(fast_db, subset, tmp_path):
    with pytest.raises(imgvec.InvalidArgument):
        imgvec.Database(tmp_path / "x", pipeline="turbo")
    with pytest.raises(imgvec.InvalidArgument) as e:
        imgvec.Database(REPO / "docs", read_only=True)
    assert isinstance(e.value, ValueError) and isinstance(e.value, imgvec.Error)
    db_path = copy_db(fast_db, tmp_path / "db")
    with imgvec.Database(db_path) as writer:
        with pytest.raises(imgvec.LockedError):
            imgvec.Database(db_path)
        with pytest.raises(imgvec.InvalidArgument):
            writer.search(b"", k=0)
        with pytest.raises(imgvec.InvalidArgument):
            writer.search(1, mode="fastest")
        with pytest.raises(imgvec.InvalidArgument, match="rerank depth"):
            writer.search(1, mode="ivfpq", rerank_depth=0)
        # An option search does not have is refused by name by the entries that pass search
        # options on (search's own signature refuses it as Python does).
        with pytest.raises(TypeError, match="colour"):
            writer.featurize(sorted(subset[0].iterdir())[0], colour="red")
        with pytest.raises(TypeError, match="colour"):
            writer.candidates([1], colour="red")
        with pytest.raises(imgvec.ImageError) as img_err:
            writer.insert(REPO / "README.md")
        assert img_err.value.path and img_err.value.path.endswith("README.md")
        assert len(writer) > 0  # nothing stored was lost
        writer.compact()  # seal the rows into a segment
    # Damage a stored vector: the search that reads it raises CorruptionError naming the file.
    seg = sorted((db_path / "segments").iterdir())[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x10
    seg.write_bytes(bytes(data))
    with imgvec.Database(db_path, read_only=True) as db:
        with pytest.raises(imgvec.CorruptionError) as bad:
            db.search(1, k=3)
        assert bad.value.path == str(seg)
        # An exact scan of a batch reads the damaged block once for all: each query reports it.
        images = sorted(subset[0].iterdir())[:2]
        batch = db.search(images, k=3)
        assert [type(r.error) for r in batch] == [imgvec.CorruptionError] * 2
    closed = imgvec.Database(fast_db, read_only=True)
    closed.close()
    with pytest.raises(imgvec.Error):
        closed.search(1)


def test_threads_share_one_database_and_run_in_parallel(fast_db, subset, tmp_path):
    folder, queries, _ = subset
    db_path = copy_db(fast_db, tmp_path / "db")
    more = tmp_path / "more"
    more.mkdir()
    for name in sorted(os.listdir(folder))[:12]:
        Image.open(folder / name).convert("RGB").transpose(Image.FLIP_LEFT_RIGHT).save(more / ("flip-" + name))
    errors = []
    searches = []
    with imgvec.Database(db_path) as db:
        def ingest():
            try:
                s = db.ingest([more], progress=False)
                assert s.stored == 12
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        def search(part):
            try:
                for q in queries[part * 5 : part * 5 + 5]:
                    searches.append(db.search(q["path"], k=3))
            except Exception as e:  # pragma: no cover
                errors.append(e)

        ticks = 0
        # One ingester and four searchers on one handle.
        threads = [threading.Thread(target=ingest)]
        threads += [threading.Thread(target=search, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            ticks += 1  # the GIL is free while the engine works
            time.sleep(0.001)
        assert not errors, errors
        assert len(searches) == 20 and all(len(r) == 3 for r in searches)
        assert ticks > 50
        assert len(db) == len(os.listdir(folder)) + 12


INTERRUPTED = r"""
import signal, sys, imgvec
# A process started in the background by a non-interactive shell inherits SIGINT ignored, and
# Python then leaves it ignored; a user's Ctrl-C is not, so the test restores Python's handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
db = imgvec.Database(sys.argv[1])
run = db.ingest_events([sys.argv[2]])
try:
    for ev in run:
        # one write per line: print() writes its pieces and the newline separately, and
        # Ctrl-C between them would glue "stored " to the next line
        sys.stdout.write(f"{ev.status} {ev.id}\n")
        sys.stdout.flush()
except KeyboardInterrupt:
    s = run.stop()  # waits for the images in flight (a no-op if the stream saw the interrupt)
    print("interrupted", s.interrupted if s else None, flush=True)
    db.close()
    sys.exit(130)
"""


def test_ctrl_c_stops_ingest_and_keeps_what_was_acknowledged(tmp_path):
    folder = INSTANCES / "db"  # all 684: long enough to interrupt
    db_path = tmp_path / "db"
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, str(db_path), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    acked = []
    assert proc.stdout is not None
    for line in proc.stdout:
        status, _, id_ = line.strip().partition(" ")
        if status == "stored":
            acked.append(int(id_))
        if len(acked) == 1:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, rest
    acked += [int(l.split()[1]) for l in rest.splitlines() if re.fullmatch(r"stored \d+", l)]
    assert "interrupted True" in rest
    total = len(os.listdir(folder))
    with imgvec.Database(db_path) as db:
        stored = {r.id for r in db.records()}
        assert set(acked) <= stored and len(stored) < total
        again = db.ingest([folder], progress=False)  # resumes
        assert again.unchanged == len(stored) and again.stored == total - len(stored)


def test_results_show_in_notebooks_and_pandas(fast_db, subset):
    _, queries, _ = subset
    with imgvec.Database(fast_db, read_only=True) as db:
        res = db.search(queries[0]["path"], k=4)
        page = res._repr_html_()
        assert page.count("<img src=\"data:image/") == 5  # the query and its four hits
        assert "id:" not in repr(res) and str(res[0].id) in repr(res)
        frame = res.to_pandas()
        assert list(frame["rank"]) == [1, 2, 3, 4]
        assert list(frame["id"]) == res.ids


def test_ingest_events_and_summary(subset, tmp_path):
    folder, _, _ = subset
    names = sorted(os.listdir(folder))[:4]
    src = tmp_path / "src"
    src.mkdir()
    for n in names:
        shutil.copy(folder / n, src / n)
    shutil.copy(folder / names[0], src / "copy.jpg")
    (src / "notes.txt").write_text("not an image")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    with imgvec.Database(tmp_path / "db") as db:
        run = db.ingest_events(src, attrs={"batch": "1"})
        assert run.total == 6
        events = list(run)
        statuses = sorted(e.status for e in events)
        assert statuses == ["error"] + ["stored"] * 5
        broken = next(e for e in events if e.status == "error")
        assert broken.path.endswith("broken.jpg") and broken.error
        # copy.jpg and its original: whichever is stored second names the first.
        dupes = [e for e in events if e.duplicate_of is not None]
        assert len(dupes) == 1 and dupes[0].path.endswith(("copy.jpg", names[0]))
        summary = run.summary
        assert summary is not None
        assert (summary.stored, summary.errors, summary.skipped, summary.duplicates) == (5, 1, 1, 1)
        seen = []
        again = db.ingest(src, progress=True, on_event=seen.append)
        assert again.unchanged == 5 and len(seen) == 6
        assert db.records()[0].attrs == {"batch": "1"}


def test_features_made_once_search_like_the_image(fast_db, subset):
    _, queries, _ = subset
    paths = [q["path"] for q in queries[:3]]
    with imgvec.Database(fast_db, read_only=True) as db:
        features = db.featurize(paths)
        assert all(isinstance(f, imgvec.QueryFeatures) for f in features)
        for path, f in zip(paths, features):
            a, b = db.search(f, k=5), db.search(path, k=5)
            assert [h.id for h in a] == [h.id for h in b]
            # The model ran on a batch of three, not one: the same up to float rounding.
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
        turned = db.featurize(paths[0], augment="rot4")
        assert len(turned.data) > len(features[0].data)  # four variants
        with pytest.raises(imgvec.InvalidArgument, match="id query"):
            db.featurize(1)
        with pytest.raises(imgvec.ImageError):
            db.featurize("/no/such/image.jpg")
        with pytest.raises(imgvec.InvalidArgument, match="not imgvec query features"):
            db.search(imgvec.QueryFeatures(b"nonsense"))
        # A pipeline without local features verifies nothing, so it has no candidates to name;
        # an unreadable query is its exception.
        none, bad = db.candidates([features[0], "/no/such/image.jpg"])
        assert none == {"shortlist": [], "voted": [], "dense": [], "turns": [], "asked": [0, 0, 0], "expanded": []}
        assert isinstance(bad, imgvec.ImageError)
        with pytest.raises(imgvec.InvalidArgument, match="candidates"):
            db.search(features[0], candidates={"shortlist": "nonsense"})
        with pytest.raises(imgvec.InvalidArgument, match="collection_rows"):
            db.candidates([features[0]], collection_rows=0)


def test_a_preset_with_its_cnn_replaced(tmp_path):
    """``model=`` with a preset: the database is that preset with the given CNN (here the
    trainable base model `imgvec train contrastive` starts from, whose maps equal the preset
    model's), recorded and used; `fast` takes no replacement CNN."""
    assert BASE_MODEL.is_file(), f"{BASE_MODEL}: made by scripts/setup.sh"
    images = sorted((INSTANCES / "db").glob("*.jpg"))[:8]
    with imgvec.Database(tmp_path / "tuned", pipeline="balanced", model=BASE_MODEL) as db:
        assert db.ingest(images, progress=False).stored == 8
        info = db.info()
        assert info["pipeline"]["name"] == "balanced"
        assert info["pipeline"]["model_source"] == BASE_MODEL.name
        tuned = db.search(images[2], k=3)
    with imgvec.Database(tmp_path / "plain", pipeline="balanced") as db:
        db.ingest(images, progress=False)
        plain = db.search(images[2], k=3)
    assert [h.path for h in tuned.hits] == [h.path for h in plain.hits]
    assert abs(tuned.hits[1].score - plain.hits[1].score) < 1e-3
    with pytest.raises(imgvec.InvalidArgument, match="fast"):
        imgvec.Database(tmp_path / "f", pipeline="fast", model=BASE_MODEL)
