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
