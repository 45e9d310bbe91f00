"""README.md documents what the code does: every report column and every CLI option."""

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
