"""The notebooks, run top to bottom by a real Jupyter kernel (nbclient + ipykernel) against
a report the real pipeline made, as a user runs them; each must draw its figures."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

import sample_report

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# the matplotlib figures each notebook draws (9 in all)
FIGURES = {"explore": 4, "search": 3, "tagging": 2}


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return sample_report.build(tmp_path_factory)


def run_notebook(name: str) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # a failing cell raises CellExecutionError, with the cell and its traceback
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def text_of(nb) -> str:
    parts = []
    for o in outputs(nb):
        parts.append(o.get("text", ""))
        parts += [o.get("data", {}).get(k, "") for k in ("text/plain", "text/html")]
    return "\n".join(parts)


def figures(nb) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs(nb))


def test_every_notebook_is_run_here_and_committed_without_outputs():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(FIGURES)
    for name in FIGURES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name}.ipynb has outputs"
        assert any("VIDAN_REPORTS" in c.source for c in code), name


@pytest.fixture
def kernel_env(out, tmp_path, monkeypatch):
    # the kernel inherits this process's environment
    monkeypatch.setenv("VIDAN_REPORTS", str(out))
    monkeypatch.setenv("VIDAN_CACHE", str(tmp_path / "cache"))  # thumbnails go here, not into ~/.cache
    # the kernel of this environment (ipykernel's own spec), before any user's "python3" spec
    monkeypatch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
    return out


def test_explore_notebook(kernel_env):
    nb = run_notebook("explore")
    assert figures(nb) >= FIGURES["explore"], figures(nb)
    text = text_of(nb)
    # the failure table names the bad file, its stage and the decoder's words
    assert re.search(r"notes\.mp4.*failed.*probe.*Invalid data", text, re.S), text[-3000:]
    assert "food_and_drink" in text and "space_and_rockets" in text  # tag frequencies


def test_search_notebook(kernel_env):
    nb = run_notebook("search")
    assert figures(nb) >= FIGURES["search"], figures(nb)
    grids = [o["data"]["text/html"] for o in outputs(nb) if "<figure" in o.get("data", {}).get("text/html", "")]
    assert grids and grids[0].count("data:image/png;base64,") == 4, "no thumbnail grid of the 4 segments"
    # the first hit for the default query is the coffee clip, shown first in the grid
    assert "coffee.mp4 00:00–00:06" in grids[0].split("<figure")[1]
    assert (kernel_env / "_vidan").is_file() and not list(kernel_env.rglob("*.png"))


def test_tagging_notebook_changes_a_copy_not_the_users_report(kernel_env):
    before = {p: p.stat().st_mtime_ns for p in kernel_env.rglob("*")}
    nb = run_notebook("tagging")
    assert figures(nb) >= FIGURES["tagging"], figures(nb)
    assert {p: p.stat().st_mtime_ns for p in kernel_env.rglob("*")} == before
    text = text_of(nb)
    # the edited taxonomy's new class is given after, the removed one only before
    freq = next(o["data"]["text/plain"] for c in nb.cells if "freq = both" in c.source for o in c.outputs
                if "before" in o.get("data", {}).get("text/plain", ""))
    rows = {line.split()[0]: line.split()[1:] for line in freq.splitlines()[2:]}
    assert rows["coffee_and_tea"] == ["0", "1"] and rows["space_and_rockets"][1] == "0", freq
    assert "re-tagged" in text
