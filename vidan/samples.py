"""Sample videos for ``make run``: real photos, real (synthesised) English speech.

``python -m vidan.samples DIR`` writes a small folder that exercises every part of the
pipeline: speech, silence, a file without audio, and a video of several scenes with
hard cuts and a fade. Built locally from bundled data, so no download is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vidan import synth
from vidan.synth import Scene


def make_samples(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    made = []

    def build(name: str, fn) -> None:
        path = folder / name
        if not path.exists():
            tmp = path.with_name(".tmp-" + name)
            fn(tmp)
            tmp.replace(path)
        made.append(path)

    def coffee(p):
        audio = synth.concat_audio(folder / ".coffee.wav", [(1.0, synth.speech_clip("coffee"))])
        synth.write_video(p, [Scene(8.0, synth.photo("coffee"))], audio=audio)
        audio.unlink()

    def cat(p):
        audio = synth.concat_audio(folder / ".cat.wav", [(0.5, synth.speech_clip("cat"))])
        synth.write_video(p, [Scene(7.0, synth.photo("chelsea"))], audio=audio)
        audio.unlink()

    def scenes(p):
        # rocket (speech about the launch) | hard cut | bread talk over a coffee table |
        # fade through black | football talk over flat green "pitch"
        audio = synth.concat_audio(folder / ".scenes.wav", [
            (0.5, synth.speech_clip("rocket")), (8.5, synth.speech_clip("bread")), (17.0, synth.speech_clip("football")),
        ])
        synth.write_video(p, [
            Scene(8.0, synth.photo("rocket")),
            Scene(7.0, synth.photo("coffee"), fade_out_s=1.0),
            Scene(8.0, (40, 140, 60), fade_in_s=1.0),
        ], audio=audio)
        audio.unlink()

    def silent(p):
        synth.write_video(p, [Scene(6.0, synth.photo("astronaut"))])

    build("coffee_morning.mp4", coffee)
    build("cat_nap.mp4", cat)
    build("three_scenes.mp4", scenes)
    build("astronaut_no_audio.mp4", silent)
    return made


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m vidan.samples DIR", file=sys.stderr)
        return 2
    for p in make_samples(argv[0]):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
