"""Peak memory against video length: a 2-hour file should cost about what a 2-minute one does.

Generates 2-minute, 20-minute and 2-hour videos (320x240 at 5 fps with a tone, so the
encoder is quick), runs ``vidan analyze --local`` on each in a fresh process, and prints
wall time and the peak RSS of the largest process in its tree, with ratios against the
2-minute run. Usage:

    .venv/bin/python benchmarks/bench_memory.py [--durations 120,1200,7200] [--sample-fps 0.25]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vidan.media.ffmpeg_bin import ffmpeg_exe


def make_video(path: Path, seconds: int) -> None:
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=5:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-c:a", "aac", "-b:a", "32k",
                    "-shortest", str(path)], check=True)


def measure(video: Path, out: Path, sample_fps: float) -> tuple[float, float, int]:
    """Run one analysis in a child process; (wall seconds, peak RSS MiB, exit code)."""
    cmd = [sys.executable, "-m", "vidan", "analyze", str(video), "--out", str(out), "--local", "--quiet",
           "--sample-fps", str(sample_fps)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)
    wall = time.perf_counter() - t0
    # the largest RSS of any process in the tree that was waited for (Linux: KiB)
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--durations", default="120,1200,7200")
    ap.add_argument("--sample-fps", type=float, default=0.25)
    args = ap.parse_args()
    durations = [int(d) for d in args.durations.split(",")]
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
            wall, peak, code = (float(x) for x in res.stdout.split())
            rows.append((d, gen, wall, peak, int(code)))
            video.unlink()
    base = rows[0]
    print(f"\nPeak memory by video length (vidan analyze --local, sample_fps={args.sample_fps})\n")
    print("| video | wall s | x real time | peak RSS MiB | RSS vs first | wall vs first | exit |")
    print("|---|---|---|---|---|---|---|")
    for d, _gen, wall, peak, code in rows:
        print(f"| {d / 60:.0f} min | {wall:.1f} | {d / wall:.1f} | {peak:.0f} | {peak / base[3]:.2f} | "
              f"{wall / base[2]:.2f} | {code} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--_one":
        w, p, c = measure(Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
        print(w, p, c)
        sys.exit(0)
    sys.exit(main())
