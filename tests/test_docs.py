"""README.md documents what the code does: report columns, CLI options, error stages, benchmark output."""

import importlib
import json
import re
import sys
from pathlib import Path

import pytest

from vidan.cli import _parser
from vidan.report import DATASETS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_report_column_is_documented(dataset):
    missing = [f.name for f in DATASETS[dataset] if f"`{f.name}`" not in README]
    assert not missing, f"{dataset} columns missing from README: {missing}"


def test_every_cli_option_is_documented():
    sub = next(a for a in _parser()._actions if a.dest == "command")
    options = {o for name in ("analyze", "search") for a in sub.choices[name]._actions for o in a.option_strings
               if o.startswith("--") and o != "--help"}
    missing = sorted(o for o in options if o not in README)
    assert not missing, f"options missing from README: {missing}"


ROOT = Path(__file__).resolve().parents[1]


def _error_stages() -> dict[str, str]:
    from vidan import records

    return {k: v for k, v in vars(records).items() if k.startswith("STAGE_")}


def test_every_error_stage_is_emitted_somewhere():
    # a stage the code never raises is a promise the report cannot keep
    sources = [p.read_text() for d in ("vidan", "workers") for p in (ROOT / d).rglob("*.py")
               if p != ROOT / "vidan" / "records.py"]
    unused = [name for name in _error_stages() if not any(re.search(rf"\b{name}\b", s) for s in sources)]
    assert not unused, f"error stages defined in vidan/records.py but never used: {unused}"


def test_readme_lists_exactly_the_error_stages():
    line = next(ln for ln in README.splitlines() if "| `failed` |" in ln)
    listed = re.findall(r"`(\w+)`:", line[line.index("`error_stage` ("):])
    assert sorted(listed) == sorted(_error_stages().values())


BENCHMARKS = ("bench_pipeline", "bench_stages", "bench_memory", "bench_segments", "bench_search", "bench_store",
              "bench_tags")


def _benchmark(name: str):
    # the scripts import their shared helpers as a sibling module, as they do when run
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module(name)


def _readme_table_header(name: str) -> str:
    title = f"(`benchmarks/{name}.py`)"
    assert title in README, f"README's Benchmarks section has no output of benchmarks/{name}.py"
    lines = README[README.index(title):].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    return "\n".join(lines[first:first + 2])


@pytest.mark.parametrize("name", BENCHMARKS)
def test_readme_benchmark_table_has_the_scripts_header(name):
    assert _readme_table_header(name) == _benchmark(name).HEADER


RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))


def test_every_benchmark_has_stored_results():
    stored = {json.loads(p.read_text())["benchmark"] for p in RESULTS}
    assert sorted(set(BENCHMARKS) - stored) == []


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.stem)
def test_readme_carries_the_stored_benchmark_output_unedited(path):
    # rendering the stored figures again gives exactly what the run printed; the README
    # must hold that text, so a figure edited by hand or a stale table fails here
    record = json.loads(path.read_text())
    mod = _benchmark(record["benchmark"])
    printed = mod.render(record)
    assert mod.HEADER in printed
    assert printed in README, f"README's {record['benchmark']} output differs from {path.name}"
