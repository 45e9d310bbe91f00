"""README's DuckDB, Polars and pandas recipes, run as they are written there, on a report
the real pipeline made, with an uncommitted part file beside the committed ones: what
the recipes give must be exactly what ``vidan.load_report`` gives."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import sample_report
import vidan
from vidan.report import files

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def recipes() -> dict[str, str]:
    found = re.findall(r"<!-- recipe: (\w+) -->\s*```python\n(.*?)```", README, re.S)
    return dict(found)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder where ``reports/sample`` is a copy of the shared report, plus a part file
    that no commit lists (a run writing, or one that was killed), holding copies of rows."""
    out = sample_report.build(tmp_path_factory)
    root = tmp_path_factory.mktemp("recipes")
    report = root / "reports" / "sample"
    shutil.copytree(out, report)
    for dataset in ("segments", "videos"):
        live = Path(files(report, dataset)[0])
        shutil.copy(live, live.with_name("part-uncommitted-" + live.name))
    return root


@pytest.fixture(scope="module")
def rep(workdir):
    return vidan.load_report(workdir / "reports" / "sample")


def run_recipe(name: str, workdir: Path, monkeypatch) -> dict:
    monkeypatch.chdir(workdir)
    scope: dict = {}
    exec(compile(recipes()[name], f"README.md recipe {name}", "exec"), scope)
    return scope


def test_the_readme_shows_exactly_three_recipes():
    assert sorted(recipes()) == ["duckdb", "pandas", "polars"]


def test_the_folders_hold_rows_no_commit_lists(workdir, rep):
    # without this the recipes below could read the folders and still pass
    import duckdb

    everything = duckdb.sql(f"SELECT count(*) FROM read_parquet('{workdir}/reports/sample/segments/*.parquet')")
    assert everything.fetchall()[0][0] > len(rep.segments) > 0


def test_duckdb_sql_over_tags(workdir, rep, monkeypatch):
    got = run_recipe("duckdb", workdir, monkeypatch)["tag_counts"]
    tags = rep.tags()
    want = tags.groupby(["kind", "label"], observed=True).agg(segments=("score", "size"), mean_score=("score", "mean"))
    got = got.set_index(["kind", "label"]).sort_index()
    want = want.reset_index().astype({"kind": str, "label": str}).set_index(["kind", "label"]).sort_index()
    assert list(got.index) == list(want.index)
    assert list(got.segments) == list(want.segments)
    assert np.allclose(got.mean_score, want.mean_score, atol=1e-3)
    assert list(got.segments) and got.segments.max() > 1


def test_polars_group_by(workdir, rep, monkeypatch):
    per_file = run_recipe("polars", workdir, monkeypatch)["per_file"].to_pandas()
    seg = rep.segments.assign(path=rep.segments.path.astype(str), seconds=rep.segments.end_s - rep.segments.start_s)
    want = seg.groupby("path").agg(segments=("segment_index", "size"), seconds=("seconds", "sum"),
                                   speech=("speech_ratio", "mean")).reset_index()
    assert list(per_file.path) == list(want.path)
    assert list(per_file.segments) == list(want.segments)
    assert np.allclose(per_file.seconds, want.seconds)
    assert np.allclose(per_file.speech, want.speech, equal_nan=True)


def test_pandas_failures(workdir, rep, monkeypatch):
    problems = run_recipe("pandas", workdir, monkeypatch)["problems"]
    want = rep.failures()
    assert sorted(problems.path) == sorted(want.path.astype(str)) and len(want) == 1
    assert list(problems.error_message) == list(want.error_message)


def test_duckdb_and_polars_read_every_column_with_its_type(workdir, rep):
    import duckdb
    import polars as pl

    report = workdir / "reports" / "sample"
    seg = files(report, "segments")
    lf = pl.read_parquet(seg)
    assert lf.height == len(rep.segments) and lf.columns == list(rep.segments.columns)
    assert lf.schema["embedding"] == pl.Array(pl.Float32, 384)
    m, present = rep.embeddings("fused")
    by_key = {(v, i): e for v, i, e in zip(lf["video_id"], lf["segment_index"], lf["embedding"].to_numpy())}
    for j, key in enumerate(zip(rep.segments.video_id, rep.segments.segment_index)):
        assert np.array_equal(by_key[key], m[j])
    types = {r[0]: r[1] for r in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet({seg!r})").fetchall()}
    # DuckDB reads parquet's fixed-size lists as plain lists of the same floats
    assert types["embedding"].startswith("FLOAT[") and types["audio_embedding"].startswith("FLOAT[")
    lengths = duckdb.sql(f"SELECT min(len(embedding)), max(len(embedding)) FROM read_parquet({seg!r})").fetchall()
    assert lengths == [(384, 384)]
    assert types["tags"].replace('"', "") == "STRUCT(label VARCHAR, score FLOAT, source VARCHAR, kind VARCHAR)[]" and types["start_s"] == "DOUBLE"
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet({files(report, 'videos')!r})").fetchall()[0][0]
    assert n == len(rep.videos)


def test_files_names_only_the_three_datasets(workdir):
    # Manifest.files answers any other name with the segments files: a typo must not read them
    with pytest.raises(ValueError, match="dataset must be one of"):
        files(workdir / "reports" / "sample", "tags")
