"""README.md documents what the code does: every report column and every CLI option."""

import re
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
