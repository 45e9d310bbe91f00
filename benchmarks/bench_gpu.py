"""What a GPU machine does with vidan's models, per batch size, and end to end; one unattended command.

    .venv/bin/python benchmarks/bench_gpu.py [--quick | --full] [--json PATH]

On a CUDA machine (full by default, under 10 minutes on one H200 with 16 cores):

* the image encoder (EfficientNet-Lite0 through ``ImageClassifier.probs``, 224x224
  frames, fp16 autocast) in images/s at batch 1, 8, 32 and 128;
* Whisper (the config's faster-whisper base, float16) over 30 s items of speech, voice
  activity found beforehand, at ``asr.batch_size`` 1, 8 and 32: times real time;
* end to end on an embedded Ray (``device="auto"``), a generated 360p and a 720p folder:
  video-hours per GPU-hour (media seconds over wall seconds, per GPU). Ray is started once
  before both folders; the runs include loading the models into the actors.

Beside each: GPU busy % (mean of 1 Hz samples over the measurement, NVML through pynvml
when importable, else ``nvidia-smi``), torch's peak allocation and the device's peak
used memory (which counts CTranslate2 and every process on the GPU).

Without CUDA it runs the same code on the CPU with small sizes (``--quick``, the default
there), so CI keeps it working; those figures are not GPU figures, and unless ``--json``
says otherwise they go to the temporary folder, not to ``benchmarks/results/``.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from _common import RESULTS, block, header, machine, parser, publish

NAME = "bench_gpu"
COLUMNS = ("measure", "batch", "work", "seconds", "throughput", "GPU busy %", "torch peak MiB",
           "GPU used peak MiB")
HEADER = header(COLUMNS)
FULL = {"vision_batches": [1, 8, 32, 128], "vision_min_s": 3.0, "asr_batches": [1, 8, 32], "asr_items": 32,
        "asr_item_s": 30.0, "files": 16, "file_s": 60.0}
QUICK = {"vision_batches": [1, 8], "vision_min_s": 0.5, "asr_batches": [1, 2], "asr_items": 2, "asr_item_s": 10.0,
         "files": 1, "file_s": 10.0}
RESOLUTIONS = {"360p": (640, 360), "720p": (1280, 720)}


# --- the GPU, watched -------------------------------------------------------------------

class GpuMonitor:
    """Samples GPU 0's utilisation and used memory once a second in a thread."""

    def __init__(self, enabled: bool = True, interval_s: float = 1.0):
        self.interval_s = interval_s
        self.samples: list[tuple[float, float, float]] = []  # (time, busy %, used MiB)
        self.source = None
        self._stop = threading.Event()
        self._read = (self._nvml() or self._smi()) if enabled else None
        self._thread: Optional[threading.Thread] = None

    def _nvml(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no pynvml, or no driver: try nvidia-smi
            return None
        self.source = "NVML"

        def read():
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            return float(util.gpu), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2 ** 20
        return read

    def _smi(self):
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return None
        self.source = "nvidia-smi"

        def read():
            out = subprocess.run([exe, "-i", "0", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
            busy, used = out.stdout.strip().splitlines()[0].split(",")
            return float(busy), float(used)
        return read

    def start(self) -> "GpuMonitor":
        if self._read is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy, used = self._read()
                self.samples.append((time.monotonic(), busy, used))
            except Exception:  # a failed sample is a gap, not a failed benchmark
                pass
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def window(self, t0: float, t1: float) -> tuple[Optional[float], Optional[float]]:
        """Mean busy % and peak used MiB between two ``time.monotonic()`` readings."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if not inside:
            return None, None
        return sum(s[1] for s in inside) / len(inside), max(s[2] for s in inside)


def gpu_info() -> Optional[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return None
    info = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(), "cuda": torch.version.cuda,
            "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1), "driver": None}
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run([exe, "-i", "0", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            info["driver"] = out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return info


# --- measurements -------------------------------------------------------------------------

class Bench:
    def __init__(self, device: str, sizes: dict[str, Any], folder: Path, monitor: GpuMonitor):
        self.device, self.sizes, self.folder, self.monitor = device, sizes, folder, monitor
        self.rows: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def _torch_peak_reset(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def _torch_peak(self) -> Optional[float]:
        if self.device != "cuda":
            return None
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2 ** 20

    def row(self, measure: str, batch: Optional[int], work: str, seconds: float, amount: float, unit: str,
            t0: float, torch_peak: Optional[float]) -> None:
        busy, used = self.monitor.window(t0, time.monotonic())
        self.rows.append({"measure": measure, "batch": batch, "work": work, "seconds": seconds,
                          "throughput": amount / seconds, "unit": unit, "gpu_busy_pct": busy,
                          "torch_peak_mib": torch_peak, "gpu_used_peak_mib": used})

    def guarded(self, what: str, fn) -> None:
        # unattended: one part failing must not cost the figures of the others
        try:
            fn()
        except Exception as e:
            self.errors.append(f"{what}: {type(e).__name__}: {e}")
            print(f"bench_gpu: {what} failed: {type(e).__name__}: {e}", file=sys.stderr)

    def vision(self) -> None:
        import contextlib

        import numpy as np
        import torch

        from vidan import synth
        from vidan.models import vision

        model = vision.load_classifier(self.device)
        photos = [vision.center_crop_square(synth.photo(n)) for n in ("coffee", "chelsea", "rocket", "astronaut")]
        autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if self.device == "cuda" \
            else contextlib.nullcontext
        saved = vision.BATCH
        try:
            for bs in self.sizes["vision_batches"]:
                # probs() splits its input into chunks of vision.BATCH: one chunk per call here
                vision.BATCH = bs
                frames = np.stack([photos[i % len(photos)] for i in range(bs)])
                with autocast():
                    model.probs(frames)  # warm-up: kernels chosen, memory allocated
                self._torch_peak_reset()
                t0, n, start = time.monotonic(), 0, time.perf_counter()
                while n == 0 or time.perf_counter() - start < self.sizes["vision_min_s"]:
                    with autocast():
                        model.probs(frames)
                    n += bs
                seconds = time.perf_counter() - start
                self.row("image encoder, 224x224" + (", fp16 autocast" if self.device == "cuda" else ""), bs,
                         f"{n} images", seconds, n, "images/s", t0, self._torch_peak())
        finally:
            vision.BATCH = saved

    def asr(self) -> None:
        import bench_pipeline

        from vidan import synth
        from vidan.config import Config
        from vidan.models.asr import SpeechItem, load_asr
        from vidan.models.audio_features import speech_spans

        media = bench_pipeline.Media(self.folder / "speech")
        (self.folder / "speech" / "tiles").mkdir(parents=True, exist_ok=True)
        items = []
        for k in range(self.sizes["asr_items"]):
            audio = synth.read_audio(media.speech(self.sizes["asr_item_s"], k))
            # voice activity found once, here: the rows time Whisper alone
            spans = [(s.start_s, s.end_s) for s in speech_spans(audio)]
            items.append(SpeechItem(audio, offset_s=0.0, speech=spans))
        audio_s = sum(len(it.audio) for it in items) / 16000
        base = Config().asr
        for bs in self.sizes["asr_batches"]:
            model = load_asr(replace(base, batch_size=bs), self.device)
            model.transcribe_many(items[:1])  # warm-up
            t0, start = time.monotonic(), time.perf_counter()
            out = model.transcribe_many(items)
            seconds = time.perf_counter() - start
            words = sum(len(t.words) for t in out)
            if not words:
                raise RuntimeError("Whisper heard no words in the speech items")
            kind = getattr(model, "compute_type", "")
            self.row(f"Whisper {base.model} ({base.backend}{', ' + kind if kind else ''})", bs,
                     f"{len(items)} x {self.sizes['asr_item_s']:g} s, {words} words", seconds, audio_s,
                     "x real time", t0, None)
            del model

    def end_to_end(self) -> None:
        import bench_pipeline

        from workers.connect import init_ray

        started = init_ray()
        try:
            for label, size in RESOLUTIONS.items():
                self.guarded(f"end to end {label}", lambda: self._folder(label, size, bench_pipeline))
        finally:
            if started:
                from workers.connect import stop_ray

                stop_ray()

    def _folder(self, label: str, size: tuple[int, int], bench_pipeline) -> None:
        media = bench_pipeline.Media(self.folder / label, size=size)
        n, secs = self.sizes["files"], self.sizes["file_s"]
        files = [media.long(self.folder / label / "in" / f"v{k:02d}.mp4", secs, k) for k in range(n)]
        media_s = sum(bench_pipeline.duration(p) for p in files)
        t0 = time.monotonic()
        wall, _, _ = bench_pipeline.analyse(files, self.folder / label / "out", "ray")
        gpus = max(1, (gpu_info() or {}).get("count", 1)) if self.device == "cuda" else 1
        unit = "video-h per GPU-h" if self.device == "cuda" else "video-h per machine-h (CPU)"
        self.row(f"end to end {label} ({size[0]}x{size[1]}), Ray", None, f"{n} files, {media_s:.0f} s", wall,
                 media_s / gpus, unit, t0, None)


def _num(x: Optional[float], fmt: str = ".0f") -> str:
    return "n/a" if x is None else format(x, fmt)


def render(record: dict[str, Any]) -> str:
    p, gpu = record["params"], record["gpu"]
    where = (f"{gpu['count']} x {gpu['name']} ({gpu['memory_gib']} GiB), driver {gpu['driver']}, CUDA {gpu['cuda']}"
             if gpu else "no GPU: CPU only, small sizes; these are not GPU figures")
    title = (f"**GPU benchmark** (`benchmarks/{NAME}.py`{' --quick' if p['quick'] else ''}) on {where}. "
             "Image encoder: EfficientNet-Lite0 via `ImageClassifier.probs`, one call per batch. Whisper: "
             f"{p['asr_items']} items of {p['asr_item_s']:g} s of speech, voice activity found beforehand, "
             "`asr.batch_size` as given. End to end: `vidan.pipeline.run` on an embedded Ray started beforehand, "
             f"{p['files']} generated file(s) of {p['file_s']:g} s with speech, model loads included. GPU busy: mean of "
             f"1 Hz samples ({record['monitor'] or 'none'}); torch peak: `max_memory_allocated` in this process; "
             "GPU used peak: the device's used memory, every process.")
    cells = []
    for r in record["rows"]:
        cells.append((r["measure"], "" if r["batch"] is None else str(r["batch"]), r["work"], f"{r['seconds']:.2f}",
                      f"{r['throughput']:.1f} {r['unit']}", _num(r["gpu_busy_pct"]), _num(r["torch_peak_mib"]),
                      _num(r["gpu_used_peak_mib"])))
    for e in record["errors"]:
        cells.append((f"FAILED: {e}"[:300], "", "", "", "", "", "", ""))
    return block(title, record["machine"], COLUMNS, cells)


def main(argv: Optional[list[str]] = None) -> int:
    import torch

    ap = parser(NAME, __doc__)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes (the default without CUDA)")
    mode.add_argument("--full", action="store_true", help="full sizes (the default with CUDA)")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    quick = args.quick or (device == "cpu" and not args.full)
    sizes = dict(QUICK if quick else FULL)
    json_path = args.json
    if device == "cpu" and json_path == RESULTS / f"{NAME}.json":
        # benchmarks/results/ holds what the README publishes, and CPU figures are not GPU figures
        json_path = Path(tempfile.gettempdir()) / f"{NAME}.cpu.json"
    m = machine()
    monitor = GpuMonitor(enabled=device == "cuda").start()
    with tempfile.TemporaryDirectory(prefix="vidan-bench-gpu-") as tmp:
        bench = Bench(device, sizes, Path(tmp), monitor)
        bench.guarded("image encoder", bench.vision)
        bench.guarded("Whisper", bench.asr)
        bench.guarded("end to end", bench.end_to_end)
    monitor.stop()
    bad = [r["measure"] for r in bench.rows if not (math.isfinite(r["seconds"]) and r["seconds"] > 0)]
    bench.errors += [f"{b}: no time measured" for b in bad]
    record = {"benchmark": NAME, "machine": m, "gpu": gpu_info(), "device": device, "monitor": monitor.source,
              "params": {"quick": quick, **sizes}, "rows": bench.rows, "errors": bench.errors}
    publish(record, render, json_path)
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
