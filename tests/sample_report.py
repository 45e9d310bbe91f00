"""One small analysed report for the tests of what reads reports (the Report API, the
notebooks, the DuckDB/Polars/pandas recipes): made by the real pipeline, in this process.

``build`` analyses the clips once per test session and hands every caller the same
folder; a test that must change a report copies it first.
"""

from __future__ import annotations

from pathlib import Path

from vidan import synth
from vidan.synth import Scene

_BUILT: dict[str, Path] = {}

# (file, scenes, speech clips as (start_s, name)); the bad file has no row of segments
CLIPS = {
    "coffee.mp4": ([Scene(6.0, "coffee")], [(0.5, "coffee")]),
    "scenes.mp4": ([Scene(6.0, "rocket"), Scene(6.0, (40, 140, 60))], [(0.5, "rocket"), (6.5, "football")]),
    "silent.mp4": ([Scene(4.0, "chelsea")], []),
}


def _scene(s: Scene) -> Scene:
    return Scene(s.duration_s, synth.photo(s.image)) if isinstance(s.image, str) else s


def make_videos(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (scenes, speech) in CLIPS.items():
        audio = None
        if speech:
            audio = synth.concat_audio(folder / (name + ".wav"), [(t, synth.speech_clip(s)) for t, s in speech])
        synth.write_video(folder / name, [_scene(s) for s in scenes], audio=audio)
        if audio:
            audio.unlink()
    (folder / "notes.mp4").write_text("this is not a video\n")
    return folder


def build(tmp_path_factory) -> Path:
    """The shared report (analysed on first use, with ``executor="local"``)."""
    if "out" not in _BUILT:
        import vidan

        root = tmp_path_factory.mktemp("sample_report")
        videos = make_videos(root / "videos")
        summary = vidan.analyze([videos], out=root / "report", executor="local")
        assert summary.ok == 3 and summary.failed == 1, summary.line()
        _BUILT["out"] = root / "report"
    return _BUILT["out"]
