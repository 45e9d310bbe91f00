"""Peak memory against video length: a 1-hour file should cost about what a 2-minute one does.

Generates 2-minute, 20-minute and 1-hour videos (320x240 at 5 fps with a tone, so the
encoder is quick), runs ``vidan analyze --local`` on each in a fresh process, and prints
one markdown table: wall time, the peak RSS of the largest process in its tree and what
the report says, with ratios against the shortest video (the baseline, measured in the
same run). ``--durations 120,1200,7200`` adds a 2-hour file; that run took about 7
minutes on a shared 2-core machine, so it is not the default. Usage:

    .venv/bin/python benchmarks/bench_memory.py [--durations 120,1200,3600] [--sample-fps 0.25] [--json PATH]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import block, header, machine, parser, publish

NAME = "bench_memory"
COLUMNS = ("video", "wall s", "x real time", "peak RSS MiB", "RSS vs shortest", "wall vs shortest", "report")
HEADER = header(COLUMNS)
DEFAULT_DURATIONS = "120,1200,3600"


def make_video(path: Path, seconds: int) -> None:
    from vidan.media.ffmpeg_bin import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=5:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-c:a", "aac", "-b:a", "32k",
                    "-shortest", str(path)], check=True)


def measure_one(video: Path, out: Path, sample_fps: float) -> dict[str, Any]:
    """Run one analysis in a child process: wall seconds, peak RSS, exit code and the report's verdict."""
    cmd = [sys.executable, "-m", "vidan", "analyze", str(video), "--out", str(out), "--local", "--quiet",
           "--sample-fps", str(sample_fps)]
    t0 = time.perf_counter()
    # captured, so that only this process's one JSON line reaches the parent's stdout
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    # the largest RSS of any process in the tree that was waited for (Linux: KiB)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    report = f"exit {proc.returncode}: {last}"
    if proc.returncode == 0:
        # a run that failed early uses little memory: the row says what was analysed
        import vidan

        v = vidan.load_report(out).videos
        report = ", ".join(f"{r.status}, {r.n_segments} segments" for r in v.itertuples())
    return {"wall_s": wall, "peak_rss_mib": peak, "exit": proc.returncode, "report": report}


def _length(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds % 60 == 0 else f"{seconds:g} s"


def render(record: dict[str, Any]) -> str:
    p = record["params"]
    title = (f"**Memory against video length** (`benchmarks/{NAME}.py`): generated 320x240 5 fps video with a "
             f"tone, `vidan analyze --local --sample-fps {p['sample_fps']:g}` in a fresh process per video; peak "
             "RSS of the largest process in its tree; ratios against the shortest video, measured in the same run.")
    rows = record["rows"]
    if max(r["video_s"] for r in rows) < 7200:
        title += (" The default stops at 1 hour so that the run stays under about 6 minutes on a 2-core "
                  "machine; `--durations 120,1200,7200` adds the 2-hour file.")
    base = rows[0]
    cells = [(_length(r["video_s"]), f"{r['wall_s']:.1f}", f"{r['video_s'] / r['wall_s']:.1f}",
              f"{r['peak_rss_mib']:.0f}", f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}",
              f"{r['wall_s'] / base['wall_s']:.2f}", r["report"]) for r in rows]
    return block(title, record["machine"], COLUMNS, cells)


def main() -> int:
    ap = parser(NAME, __doc__)
    ap.add_argument("--durations", default=DEFAULT_DURATIONS, help="video lengths in seconds, comma-separated")
    ap.add_argument("--sample-fps", type=float, default=0.25)
    args = ap.parse_args()
    durations = sorted(int(d) for d in args.durations.split(","))
    m = machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidan-bench-") as tmp:
        tmp = Path(tmp)
        for d in durations:
            video = tmp / f"v{d}.mp4"
            t0 = time.perf_counter()
            make_video(video, d)
            gen = time.perf_counter() - t0
            # one fresh interpreter per size: RUSAGE_CHILDREN is a maximum over all
            # children so far, so each size is measured by its own parent process
            res = subprocess.run([sys.executable, __file__, "--_one", str(video), str(tmp / f"out{d}"),
                                  str(args.sample_fps)], capture_output=True, text=True, check=True)
            rows.append({"video_s": d, "generate_s": gen, **json.loads(res.stdout.splitlines()[-1])})
            video.unlink()
    publish({"benchmark": NAME, "machine": m, "params": {"sample_fps": args.sample_fps}, "rows": rows},
            render, args.json)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--_one":
        print(json.dumps(measure_one(Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))))
        sys.exit(0)
    sys.exit(main())
