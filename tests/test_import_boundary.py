"""Layering: pure logic imports no media, model or Ray library; only workers/ and the
top-level API touch Ray. Checked on the source, so a violation fails before it ships."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"ray", "torch", "torchvision", "av", "decord", "ffmpeg", "whisper", "faster_whisper", "sentence_transformers",
         "cv2", "scenedetect", "efficientnet_lite_pytorch"}
PURE = ["records.py", "config.py", "fusion.py", "tags.py", "segments.py", "assemble.py", "rows.py", "report.py",
        "wer.py", "incremental.py", "retag.py", "store/manifest.py", "store/commit.py", "store/keys.py",
        "store/lock.py", "store/storage.py"]


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_pure_modules_import_no_heavy_library():
    for name in PURE:
        bad = imports(ROOT / "vidan" / name) & HEAVY
        assert not bad, f"vidan/{name} imports {bad}"


def test_only_workers_and_api_reach_ray():
    for path in (ROOT / "vidan").rglob("*.py"):
        if path.name in ("api.py",):
            continue
        found = imports(path)
        assert "ray" not in found and "workers" not in found, f"{path.relative_to(ROOT)} imports ray/workers"


def test_stages_that_run_no_torch_model_load_without_importing_torch():
    """Importing torch costs a worker about 1.5 s and 300 MB at every start, and onnx 1.2 s:
    the decode, audio, speech and finish stages, and the image classifier once its ONNX
    graph is cached (``make install`` exports it, and the face detector's), load without
    them on the CPU; so does a run left to pick its device on a machine without a GPU driver."""
    import subprocess
    import sys

    from vidan.models.device import _gpu_driver_present

    for device in ("cpu", "auto"):
        if device == "auto" and _gpu_driver_present():
            continue  # there, torch must be asked
        code = ("import sys; from vidan.config import Config; from vidan.stages import load_stages; "
                f"s = load_stages(Config(), ['decode', 'audio', 'asr', 'finish', 'vision'], device={device!r}, "
                "threads=1); print(s['vision'].device, s['asr'].device, "
                "sorted(m for m in ('torch', 'sentence_transformers', 'transformers', 'onnx') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
        assert out.stdout.strip().splitlines()[-1] == "cpu cpu []", (device, out.stdout[-500:], out.stderr[-2000:])


def test_a_machine_with_a_gpu_driver_asks_torch_for_its_device(tmp_path):
    """The shortcut above only answers "no GPU": where a driver's files exist, torch (or
    CTranslate2, for Whisper) is asked, so a GPU machine never loses its GPU to it."""
    import subprocess
    import sys

    driver = tmp_path / "nvidiactl"
    driver.touch()
    code = ("import sys, vidan.models.device as d; "
            f"d._GPU_DRIVER_FILES = ({str(driver)!r},); "
            "got = d.pick_device('auto'); asked = 'torch' in sys.modules; "
            "import torch, ctranslate2; "
            "print(asked, got == ('cuda' if torch.cuda.is_available() else 'cpu'), "
            "d.pick_device('auto', 'ctranslate2') == ('cuda' if ctranslate2.get_cuda_device_count() else 'cpu'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["True", "True", "True"], out.stderr[-2000:]
