"""The benchmark commands keep working: each runs small (``--quick``) as a subprocess,
prints its one table with the rows it promises, and stores finite positive figures.
No speed is asserted: only that everything was measured."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(name, tmp_path, *args):
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick", *args,
                           "--json", str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("|")]
    return json.loads(out.read_text()), proc.stdout, table


def _positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
@pytest.mark.bench  # 3.5 minutes of four pipeline runs: `make test-bench`, kept out of `make test` for CI's time
def test_bench_pipeline_quick_prints_every_figure(tmp_path):
    record, printed, table = _run("bench_pipeline", tmp_path)
    measures = [r["measure"] for r in record["rows"]]
    expected = ["2 files, in-process (LocalExecutor)", "2 files, Ray (embedded, local)",
                "2 files, Ray: CPU s of the whole machine", "talk, end to end on Ray",
                "4 clips of 8 s, Ray", "frame stage on the talk, CPU s, 1 thread",
                "frame stage, keyframes every 2 s, CPU s, 1 thread"]
    assert measures[:7] == expected
    # real footage from PyPI (benchmarks/footage.py): its rows, or the reason under the table
    real = [m for m in measures if m.startswith("frame stage, keyframes every 2 s, ") and m != expected[-1]]
    if record["notes"]:
        assert real == [] and any("No real-footage rows: pip download" in n for n in record["notes"])
        assert record["notes"][0] in printed
    else:
        assert len(real) == 2 and measures[7:9] == real, measures
    pools = {m.split()[2] for m in measures[7 + len(real):]}
    assert pools == {"decode", "vision", "audio", "asr", "finish"}, measures
    # one table: its header, its separator, a line per row, printed as the JSON renders it
    assert table[0].startswith("| measure |") and len(table) == 2 + len(record["rows"])
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_pipeline

    assert bench_pipeline.render(record) in printed
    for r in record["rows"]:
        assert _positive(r["seconds"]), r
        for key in ("media_s", "against_s"):
            assert r[key] is None or _positive(r[key]), r
    # the comparisons the table exists for are there
    for i in (1, 2, 3, 5, 6, *range(7, 7 + len(real))):
        assert _positive(record["rows"][i]["against_s"]), record["rows"][i]
    for r in record["rows"][7 + len(real):]:
        assert 0 < r["seconds"] / r["against_s"] <= 1.0 + 1e-6, r  # a pool is never more than always busy


@pytest.mark.slow
def test_bench_gpu_quick_runs_on_the_cpu(tmp_path):
    record, printed, table = _run("bench_gpu", tmp_path)
    assert record["errors"] == []
    kinds = [r["measure"].split(",")[0].split(" (")[0] for r in record["rows"]]
    assert kinds.count("image encoder") == len(record["params"]["vision_batches"])
    assert sum(k.startswith("Whisper") for k in kinds) == len(record["params"]["asr_batches"])
    assert [k for k in kinds if k.startswith("end to end")] == ["end to end 360p", "end to end 720p"]
    assert len(table) == 2 + len(record["rows"])
    for r in record["rows"]:
        assert _positive(r["seconds"]) and _positive(r["throughput"]), r
        if record["device"] == "cpu":  # nothing to watch: said so, not made up
            assert r["gpu_busy_pct"] is None and r["gpu_used_peak_mib"] is None
    if record["gpu"] is None:
        assert "not GPU figures" in printed


@pytest.mark.slow
def test_bench_stages_quick_times_every_stage_of_the_registry(tmp_path):
    from vidan.stages import STAGES

    record, printed, table = _run("bench_stages", tmp_path)
    labels = [r["stage"] for r in record["rows"]]
    for name in STAGES:  # a stage added to the registry must be timed here too
        assert any(label.startswith(f"{name} stage:") for label in labels), (name, labels)
    assert table[0].startswith("| stage |") and len(table) == 2 + len(record["rows"])
    for r in record["rows"]:
        assert _positive(r["seconds"]), r
