"""imgvec on a real local Ray cluster (two CPUs, loopback): distributed ingest into shards,
sharded search equal to one database holding every row, acknowledged rows surviving a killed
worker, and missing or damaged shards named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from PIL import Image

import imgvec
from conftest import BASE_MODEL, INSTANCES, read_jsonl

ray = pytest.importorskip("ray")
import imgvec.ray as iray  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def answer(results: Any) -> List[Tuple[str, Any]]:
    return [(os.path.basename(h.path), h.verdict) for h in results.hits]


#: How far apart two scores of the same hit may be: sums taken in another order over other blocks
#: of rows round differently.
SCORE_TOLERANCE = 2e-4


def assert_same(a: Any, b: Any, what: Any) -> None:
    """The same hits in the same order with the same verdicts, and the same scores (up to the
    float rounding of sums taken in another order over other blocks of rows). Hits whose scores
    tie within that rounding may come in either order, and one tied with the last hit may be
    the one that is cut off."""
    sa, sb = [h.score for h in a.hits], [h.score for h in b.hits]
    detail = f"{what}: {list(zip(answer(a), sa))} != {list(zip(answer(b), sb))}"
    assert sa == pytest.approx(sb, abs=SCORE_TOLERANCE), detail
    for mine, scores, theirs, their_scores in [(a, sa, b, sb), (b, sb, a, sa)]:
        for hit, score in zip(answer(mine), scores):
            tied = [s for h, s in zip(answer(theirs), their_scores) if h == hit]
            near = [abs(score - s) <= SCORE_TOLERANCE for s in tied]
            cut_off = not tied and score - their_scores[-1] <= SCORE_TOLERANCE
            assert any(near) or cut_off, detail


def test_answers_may_differ_only_in_the_order_of_tied_hits():
    class Hit:
        def __init__(self, path: str, score: float, verdict: Any = None) -> None:
            self.path, self.score, self.verdict = path, score, verdict

    class Answer:
        def __init__(self, *hits: Tuple[str, float]) -> None:
            self.hits = [Hit(*h) for h in hits]

    base = Answer(("a", 0.9), ("b", 0.5), ("c", 0.49995), ("d", 0.3))
    for name, other, same in [
        ("identical", Answer(("a", 0.9), ("b", 0.5), ("c", 0.49995), ("d", 0.3)), True),
        ("tie swapped", Answer(("a", 0.9), ("c", 0.49996), ("b", 0.49999), ("d", 0.3)), True),
        ("tie at the cut", Answer(("a", 0.9), ("b", 0.5), ("c", 0.49995), ("e", 0.3)), True),
        ("other hit", Answer(("a", 0.9), ("b", 0.5), ("x", 0.49995), ("d", 0.3)), False),
        ("other swapped", Answer(("b", 0.9), ("a", 0.5), ("c", 0.49995), ("d", 0.3)), False),
        ("score moved", Answer(("a", 0.9), ("b", 0.5), ("c", 0.4), ("d", 0.3)), False),
        ("verdict", Answer(("a", 0.9, "verified"), ("b", 0.5), ("c", 0.49995), ("d", 0.3)), False),
    ]:
        try:
            assert_same(base, other, name)
            agreed = True
        except AssertionError:
            agreed = False
        assert agreed == same, name


def one_database_like(out: Path, where: Path, images: List[str]) -> imgvec.Database:
    """One database holding every row, made like the shards (the same learned state)."""
    with imgvec.Database(out / "template", read_only=True) as template:
        one = template.create_like(where)
    summary = one.ingest(images, progress=False)
    assert summary.errors == 0
    return one


def stored_paths(out: Path) -> Dict[str, int]:
    """Every stored row's path, with the shard that holds it."""
    found: Dict[str, int] = {}
    for i, d in enumerate(iray.shard_dirs(out)):
        with imgvec.Database(d, read_only=True) as db:
            for r in db.records():
                assert r.path not in found, f"{r.path} stored twice"
                found[r.path] = i
    return found


def test_merge_orders_hits_as_one_database_does():
    tiers = {"beneath": 2, "verified": 1, "aligned": 0, "unverified": 0}

    def hit(id: int, score: float, verdict: Any = None, key: Any = None) -> Dict[str, Any]:
        tier = tiers.get(verdict) if verdict is not None else None
        return {"id": id, "score": score, "verdict": "aligned" if verdict == "beneath" else verdict,
                "rank_key": key, "tier": tier}

    for name, answers, k, want in [
        ("scores alone", [(0, [hit(1, 0.9), hit(2, 0.5)]), (1, [hit(1, 0.7)])], 3, [(0, 1), (1, 1), (0, 2)]),
        ("k cuts", [(0, [hit(1, 0.9), hit(2, 0.5)]), (1, [hit(1, 0.7)])], 1, [(0, 1)]),
        (
            "verified first, whatever its score",
            [(0, [hit(1, 0.9, "unverified", 0.9)]), (1, [hit(4, 0.3, "verified", 1.8)])],
            2,
            [(1, 4), (0, 1)],
        ),
        (
            "what the query shows beneath pasted pictures before the verified",
            [(0, [hit(1, 0.04, "verified", 1.2)]), (1, [hit(2, 0.36, "beneath", 1.0)])],
            2,
            [(1, 2), (0, 1)],
        ),
        (
            "checked candidates by their key, not their score",
            [(0, [hit(1, 0.9, "unverified", 0.9)]), (1, [hit(2, 0.8, "aligned", 1.3)])],
            2,
            [(1, 2), (0, 1)],
        ),
        (
            "checked before unchecked",
            [(0, [hit(1, 0.95)]), (1, [hit(2, 0.6, "unverified", 0.6)])],
            2,
            [(1, 2), (0, 1)],
        ),
        ("ties go to the smaller shard, then id", [(1, [hit(1, 0.5)]), (0, [hit(3, 0.5), hit(2, 0.5)])], 3, [(0, 2), (0, 3), (1, 1)]),
        ("no shard answered", [], 5, []),
    ]:
        got = [(h["shard"], h["id"]) for h in iray.merge(answers, k)]
        assert got == want, name


def test_merge_candidates_gives_each_shard_its_rows_of_the_collections_best():
    def lists(shortlist: Any = (), voted: Any = (), dense: Any = (), turns: Any = (), asked: Any = (2, 2, 1)) -> Dict[str, Any]:
        return {"shortlist": list(shortlist), "voted": list(voted), "dense": list(dense), "turns": list(turns),
                "asked": list(asked)}

    def ids(got: Dict[int, Dict[str, Any]], name: str) -> Dict[int, List[int]]:
        return {s: [i for i, _ in c[name]] for s, c in got.items()}

    for name, parts, list_name, want in [
        ("the best of every shard, by score", [(0, lists([(1, 0.9), (2, 0.5)])), (1, lists([(7, 0.8), (8, 0.7)]))],
         "shortlist", {0: [1], 1: [7]}),
        ("one shard may hold them all", [(0, lists(voted=[(1, 9.0), (2, 8.0)])), (1, lists(voted=[(7, 1.0)]))],
         "voted", {0: [1, 2], 1: []}),
        ("each list has its own size", [(0, lists(dense=[(1, 0.5)])), (1, lists(dense=[(7, 0.6)]))],
         "dense", {0: [], 1: [7]}),
        ("ties go to the smaller shard, then id", [(1, lists([(1, 0.5)])), (0, lists([(3, 0.5), (2, 0.5)]))],
         "shortlist", {0: [2, 3], 1: []}),
        ("the expanded ranking is as long as the shortlist",
         [(0, {**lists(), "expanded": [(1, 0.9), (2, 0.8), (3, 0.1)]}), (1, {**lists(), "expanded": [(5, 0.85)]})],
         "expanded", {0: [1], 1: [5]}),
        ("a shard that verifies nothing", [(0, lists(asked=(0, 0, 0))), (1, lists(asked=(0, 0, 0)))],
         "shortlist", {0: [], 1: []}),
    ]:
        assert ids(iray.merge_candidates(parts), list_name) == want, name
    # Each shard keeps the turns of its own rows that made a list, and the sizes asked.
    got = iray.merge_candidates([(0, lists([(1, 0.9)], dense=[(2, 0.1)], turns=[(1, 5.0), (2, -3.0)])),
                                 (1, lists(dense=[(7, 0.8)], turns=[(7, 1.0)]))])
    assert got[0]["turns"] == [[1, 5.0]] and got[1]["turns"] == [[7, 1.0]]
    assert got[0]["asked"] == got[1]["asked"] == [2, 2, 1]


def test_shard_of_is_stable_and_spreads():
    keys = [f"/photos/{i:05d}.jpg" for i in range(1000)]
    counts = [0, 0, 0, 0]
    for key in keys:
        s = iray.shard_of(key, 4)
        assert s == iray.shard_of(key, 4)
        counts[s] += 1
    assert min(counts) > 200, counts


def test_balanced_shards_share_one_frozen_whitening_and_search_as_one_database(tmp_path):
    """Past 512 rows `balanced` searches in a learned whitening: learned once on the sample,
    frozen in every shard, so three shards answer exactly as one database does."""
    images = sorted(str(INSTANCES / r["path"]) for r in read_jsonl(INSTANCES / "db.jsonl"))
    out = tmp_path / "sharded"
    report = iray.ingest(images, out, shards=3, pipeline="balanced", sample=530)
    assert (report.stored, report.errors, report.skipped) == (len(images), 0, 0)
    infos = []
    for d in iray.shard_dirs(out):
        with imgvec.Database(d, read_only=True) as shard:
            infos.append(shard.info())
    with imgvec.Database(out / "template", read_only=True) as template:
        learned = template.info()["whitening"]
    assert learned is not None and learned["learned_on"] == 530
    for info in infos:
        assert info["live_rows"] > 100
        assert info["whitening"]["fingerprint"] == learned["fingerprint"]
        assert info["whitening"]["frozen"] is True
    assert sum(i["live_rows"] for i in infos) == len(images)

    one = one_database_like(out, tmp_path / "one", images)
    queries = [str(INSTANCES / q["path"]) for q in read_jsonl(INSTANCES / "queries.jsonl")][::9]
    with iray.ShardedDatabase(out) as sharded, one:
        assert len(sharded) == len(images)
        sharded_answers = sharded.search(queries, k=10)
        one_answers = one.search(queries, k=10)
        for q, a, b in zip(queries, sharded_answers, one_answers):
            assert_same(a, b, q)
        assert {h.shard for r in sharded_answers for h in r.hits} == {0, 1, 2}
        # A stored photo saved sideways matches nothing likely upright; the upright fallback's
        # turns find it (engine search/upright.rs), in the shards as in one database.
        sideways = tmp_path / "sideways.png"
        Image.open(images[7]).rotate(90, expand=True).save(sideways)
        assert not any(h.is_match for h in one.search(str(sideways), k=10, upright=False).hits)
        a, b = sharded.search(str(sideways), k=10), one.search(str(sideways), k=10)
        assert_same(a, b, sideways)
        assert Path(b.hits[0].path).resolve() == Path(images[7]).resolve() and b.hits[0].is_match


def test_a_photo_beneath_pasted_pictures_is_found_across_shards_as_in_one_database(tmp_path):
    """A smooth wallpaper with screenshots pasted over it (instances-dev's g0018 occlusion
    query): the stored screenshots verify, the wallpaper gives SIFT nothing. One database looks
    beneath the screenshots and ranks the wallpaper first; the shards decide it over the whole
    collection's verified hits and alignments, and answer the same."""
    rows = read_jsonl(INSTANCES / "db.jsonl")
    pasted = ["d00032", "d00039", "d00042", "d00045"]
    chosen = ["g0018", *pasted] + [Path(r["path"]).stem for r in rows[::23]]
    images = sorted({str(INSTANCES / "db" / f"{n}.jpg") for n in chosen})
    out = tmp_path / "sharded"
    report = iray.ingest(images, out, shards=2, pipeline="robust", sample=64)
    assert (report.stored, report.errors) == (len(images), 0)
    one = one_database_like(out, tmp_path / "one", images)
    query = str(INSTANCES / "queries" / "g0018_occlusion.jpg")
    with iray.ShardedDatabase(out) as sharded, one:
        for options in [{}, {"expand": 0}]:
            b = one.search(query, k=10, **options)
            top = b.hits[0]
            assert Path(top.path).stem == "g0018", (options, [(h.path, h.verdict) for h in b.hits])
            assert (top.verdict, top.tier) == ("aligned", 2) and top.beneath is not None
            assert top.alignment == top.beneath and top.beneath >= 0.96
            # It reads as the match it is: finds beneath have their own calibrated share.
            assert (top.match, top.confidence >= 0.5) == ("verified", True), (top.match, top.confidence)
            kept = one.search(query, k=10, matches_only=True, **options).hits
            assert kept and Path(kept[0].path).stem == "g0018"
            screenshots = [h for h in b.hits if h.verdict == "verified"]
            assert screenshots and all(h.footprint is not None and h.coverage < 0.5 for h in screenshots)
            a = sharded.search(query, k=10, **options)
            assert_same(a, b, (query, options))
            assert (a.hits[0].tier, a.hits[0].alignment) == (2, pytest.approx(top.alignment, abs=1e-5))
        # The wallpaper and the screenshots that verify are not all in one shard.
        shard_of = {Path(h.path).stem: h.shard for h in sharded.search(query, k=10).hits}
        assert {shard_of["g0018"]} != {shard_of[n] for n in pasted if n in shard_of}, shard_of


def test_a_preset_with_its_cnn_replaced_makes_every_shard_with_that_cnn(subset, tmp_path):
    """``model=``: the template stores the given CNN, every shard is made with it, and the
    sharded answers equal one database's made like the template."""
    assert BASE_MODEL.is_file(), f"{BASE_MODEL}: made by scripts/setup.sh"
    folder, queries, _ = subset
    images = sorted(str(p) for p in folder.iterdir())
    out = tmp_path / "sharded"
    report = iray.ingest(folder, out, shards=2, pipeline="balanced", model=BASE_MODEL, sample=64)
    assert (report.stored, report.errors) == (len(images), 0)
    for d in [out / iray.TEMPLATE, *iray.shard_dirs(out)]:
        with imgvec.Database(d, read_only=True) as db:
            pipeline = db.info()["pipeline"]
            assert (pipeline["name"], pipeline["model_source"]) == ("balanced", BASE_MODEL.name), d
    one = one_database_like(out, tmp_path / "one", images)
    paths = [q["path"] for q in queries][::4]
    with iray.ShardedDatabase(out) as sharded, one:
        for q, a, b in zip(paths, sharded.search(paths), one.search(paths)):
            assert_same(a, b, q)


def test_robust_sharded_search_verifies_expands_and_turns_as_one_database(subset, tmp_path):
    folder, queries, _ = subset
    images = sorted(str(p) for p in folder.iterdir())
    out = tmp_path / "sharded"
    report = iray.ingest(folder, out, shards=2, pipeline="robust", sample=64)
    assert (report.stored, report.errors) == (len(images), 0)
    one = one_database_like(out, tmp_path / "one", images)
    paths = [q["path"] for q in queries][::4]
    with iray.ShardedDatabase(out) as sharded, one:
        verdicts = set()
        tuned = {"min_inliers": 10, "inlier_px": 6.0, "min_coverage": 0.5, "dense": 10,
                 "alignment_floor": 0.9}
        for options in [{}, {"expand": 0, "upright": False}, {"k": 3, "matches_only": True}, tuned]:
            sharded_answers = sharded.search(paths, **options)
            one_answers = one.search(paths, **options)
            for q, a, b in zip(paths, sharded_answers, one_answers):
                assert_same(a, b, (q, options))
                verdicts.update(h.verdict for h in a.hits)
        assert {"verified", "unverified"} <= verdicts
        # An image given as bytes, and an id, which names a row of one shard only.
        data = Path(paths[0]).read_bytes()
        assert_same(sharded.search(data), one.search(data), "bytes")
        with pytest.raises(imgvec.InvalidArgument, match="id"):
            sharded.search(3)
        with pytest.raises(imgvec.InvalidArgument, match="min-coverage 2"):
            sharded.search(data, min_coverage=2.0)


def test_a_killed_writer_loses_no_acknowledged_row_and_a_rerun_completes(subset, tmp_path):
    folder, _, _ = subset
    images = sorted(str(p) for p in folder.iterdir())
    out, journal = tmp_path / "sharded", tmp_path / "acks.jsonl"
    iray.ingest(images[:4], out, shards=2, pipeline="fast", sample=4)  # the layout, a first rows

    def kill_a_writer_once_rows_are_acknowledged() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if journal.exists() and len(journal.read_text().splitlines()) >= 8:
                ray.kill(ray.get_actor(iray.writer_name(iray.shard_dirs(out)[1])), no_restart=True)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_writer_once_rows_are_acknowledged)
    killer.start()
    with pytest.raises(Exception):
        iray.ingest(images, out, shards=2, pipeline="fast", batch_size=2, workers=1, journal=journal)
    killer.join()
    acknowledged = [json.loads(line) for line in journal.read_text().splitlines()]
    stored = stored_paths(out)
    assert 8 <= len(acknowledged) < len(images)
    for e in acknowledged:
        assert e["status"] == "stored" and stored.get(e["path"]) == e["shard"], e
    assert len(stored) < len(images)

    rerun = iray.ingest(images, out, shards=2, pipeline="fast")
    assert rerun.errors == 0 and rerun.stored + rerun.skipped == len(images)
    assert rerun.skipped >= len(acknowledged) + 4
    assert sorted(stored_paths(out)) == images


def test_a_writer_killed_by_the_os_is_restarted_and_the_ingest_completes(subset, tmp_path):
    folder, _, _ = subset
    images = sorted(str(p) for p in folder.iterdir())
    out, journal = tmp_path / "sharded", tmp_path / "acks.jsonl"
    iray.ingest(images[:2], out, shards=2, pipeline="fast", sample=2)

    killed: List[int] = []

    def kill_9() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if journal.exists() and len(journal.read_text().splitlines()) >= 6:
                writer = ray.get_actor(iray.writer_name(iray.shard_dirs(out)[0]))
                killed.append(ray.get(writer.pid.remote()))
                os.kill(killed[0], 9)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_9)
    killer.start()
    report = iray.ingest(images, out, shards=2, pipeline="fast", batch_size=2, workers=1, journal=journal)
    killer.join()
    assert killed, "the ingest ended before a writer could be killed"
    assert report.errors == 0 and report.stored + report.unchanged + report.skipped == len(images)
    assert sorted(stored_paths(out)) == images


def test_a_missing_or_damaged_shard_is_named_and_never_silently_left_out(subset, tmp_path):
    folder, queries, _ = subset
    out = tmp_path / "sharded"
    iray.ingest(folder, out, shards=3, pipeline="fast", sample=16)
    dirs = iray.shard_dirs(out)
    shutil.rmtree(dirs[1])
    with pytest.raises(imgvec.Error, match="shard-001"):
        iray.ShardedDatabase(out)
    with iray.ShardedDatabase(out, allow_partial=True) as partial:
        r = partial.search(queries[0]["path"])
        assert r.answered == [str(dirs[0]), str(dirs[2])]
        assert list(r.missing) == [str(dirs[1])] and r.missing[str(dirs[1])]
        assert {h.shard for h in r.hits} <= {0, 2} and len(r.hits) == 10
    # A shard made with another model is refused by name too.
    with imgvec.Database(dirs[1], pipeline="balanced") as other:
        other.ingest([next(folder.iterdir())], progress=False)
    with pytest.raises(imgvec.Error, match="shard-001.*not made like"):
        iray.ShardedDatabase(out)
    with iray.ShardedDatabase(out, allow_partial=True) as partial:
        assert list(partial.missing) == [str(dirs[1])]
        # The collection's rows are those of the shards that answer.
        answering = 0
        for d in (dirs[0], dirs[2]):
            with imgvec.Database(d, read_only=True) as db:
                answering += len(db)
        assert len(partial) == answering
    # Damaged: its metadata store unreadable.
    shutil.rmtree(dirs[2] / "meta")
    (dirs[2] / "meta").write_bytes(b"not a database")
    with pytest.raises(imgvec.Error, match="shard-002"):
        iray.ShardedDatabase([dirs[0], dirs[2]])


def test_the_command_line_ingests_and_searches_on_a_running_cluster(subset, tmp_path):
    folder, queries, _ = subset
    files = sorted(folder.iterdir())[:12]
    address = ray.get_runtime_context().gcs_address
    cli = [sys.executable, "-m", "imgvec._ray_cli", "--address", address]
    out = tmp_path / "sharded"
    done = subprocess.run(
        cli + ["ingest", *map(str, files), "--out", str(out), "--shards", "2", "--sample", "4"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert (report["stored"], report["errors"]) == (12, 0) and len(report["shards"]) == 2
    done = subprocess.run(cli + ["search", str(out), str(files[3]), "-k", "3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.splitlines()[-1])
    assert line["results"][0]["path"] == str(files[3]) and line["missing"] == {}
    assert len(line["answered"]) == 2
    done = subprocess.run(cli + ["search", str(tmp_path / "nothing"), str(files[3])], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "imgvec-shards.json: missing" in done.stderr


def within(seconds: float, work: Any) -> Any:
    """``work()``'s result, or a failure (not a hung suite) when it takes longer than ``seconds``."""
    done: Dict[str, Any] = {}

    def run() -> None:
        try:
            done["value"] = work()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            done["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in done:
        raise done["error"]
    return done["value"]


def test_a_ray_dataset_of_bytes_is_ingested_resumed_and_stored_as_the_files_are(subset, tmp_path):
    """A Dataset from ``read_binary_files`` (bytes read by Ray tasks, competing with the workers
    for the same two CPUs): ingested with a damaged first file reported and the rest stored,
    resumed by the workers skipping stored keys, and its rows search as the files' rows do."""
    folder, queries, _ = subset
    files = sorted(folder.iterdir())[:13]
    source = tmp_path / "photos"
    source.mkdir()
    (source / "000-damaged.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    for f in files[:10]:
        shutil.copy(f, source / f.name)
    out = tmp_path / "sharded"

    def ingest() -> Any:
        dataset = ray.data.read_binary_files(str(source), include_paths=True)
        return iray.ingest(dataset, out, shards=2, pipeline="fast", sample=8)

    report = within(300, ingest)
    assert (report.stored, report.errors, report.skipped) == (10, 1, 0)
    assert "000-damaged.jpg" in report.failed[0].path and report.failed[0].error
    for f in files[10:]:
        shutil.copy(f, source / f.name)
    rerun = within(300, ingest)
    assert (rerun.stored, rerun.errors, rerun.skipped) == (3, 1, 10)
    stored = stored_paths(out)
    assert sorted(os.path.basename(p) for p in stored) == sorted(f.name for f in files)

    one = one_database_like(out, tmp_path / "one", sorted(str(source / f.name) for f in files))
    with iray.ShardedDatabase(out) as sharded, one:
        for q in [str(f) for f in files[::4]] + [queries[0]["path"]]:
            assert_same(sharded.search(q, k=5), one.search(q, k=5), q)
