"""A labelled evaluation set for classification tags, shared by tests/test_tag_quality.py
and benchmarks/bench_tags.py.

Real photos (scikit-image), flat generated scenes and real recorded speech (the bundled
clips), several scenes a video with hard cuts between them. Some scenes have words that
match their class, some have a picture alone, some speech over an unrelated flat
picture; a few have nothing a class could be read from, and the right answer there is
no classification tag. The taxonomy is a user's (``EVAL_TAXONOMY``), not vidan's
default, and its class names are everyday words a user would write.

``build`` makes the videos and analyses them once per process (``executor="local"``);
``score`` compares the report's classification tags with the labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

SCENE_S = 6.0
SPEECH_AT_S = 0.2  # into the scene; every bundled clip ends before the next scene starts

# A user's own taxonomy: eight everyday classes, each with a short description.
EVAL_TAXONOMY = """\
name: everyday
version: 1
classes:
  - label: food and drink
    description: eating, drinking, cooking and baking
    examples: [a cup of coffee, bread, a meal]
  - label: pets
    description: cats, dogs and other animals kept at home
  - label: space
    description: rockets, astronauts, planets, stars and the night sky
  - label: sport
    description: football and other sports, matches, teams and athletes
  - label: weather
    description: the weather forecast, rain, wind, snow and clouds
  - label: people
    description: people, a man or a woman, a crowd, faces
  - label: money
    description: coins, banknotes, prices and shopping
  - label: music
    description: music, songs, singers and instruments
"""

# Flat scenes that carry no class of their own.
GREY = (128, 128, 128)
DARK = (30, 30, 36)
GREEN = (40, 140, 60)
SKY = (150, 160, 175)
BEIGE = (205, 185, 150)
BLUE = (40, 60, 150)


@dataclass(frozen=True)
class EvalScene:
    picture: object  # a scikit-image photo name, or an (r, g, b) flat colour
    speech: Optional[str]  # a bundled speech clip, said SPEECH_AT_S into the scene
    truth: Optional[str]  # the class a person would give it; None: no class fits


# Each video: several scenes cut hard one into the next.
VIDEOS: dict[str, list[EvalScene]] = {
    "breakfast.mp4": [EvalScene("coffee", None, "food and drink"),
                      EvalScene(GREY, "bread", "food and drink"),
                      EvalScene("coffee", "coffee", "food and drink"),
                      EvalScene(DARK, None, None)],
    "cat.mp4": [EvalScene("chelsea", None, "pets"),
                EvalScene(GREY, "cat", "pets"),
                EvalScene("chelsea", "cat", "pets"),
                EvalScene("coins", None, "money")],
    "launch.mp4": [EvalScene("rocket", None, "space"),
                   EvalScene(BEIGE, "rocket", "space"),
                   EvalScene("hubble_deep_field", None, "space"),
                   EvalScene("rocket", "rocket", "space")],
    "match.mp4": [EvalScene(GREEN, "football", "sport"),
                  EvalScene(DARK, "football", "sport"),
                  EvalScene(GREEN, None, None),
                  EvalScene("coins", "coffee", "food and drink")],
    "forecast.mp4": [EvalScene(SKY, "weather", "weather"),
                     EvalScene("astronaut", None, "people"),
                     EvalScene(BLUE, "weather", "weather"),
                     EvalScene("camera", None, "people")],
    "mixed.mp4": [EvalScene("coffee", "bread", "food and drink"),
                  EvalScene("moon", None, "space"),
                  EvalScene("chelsea", None, "pets"),
                  EvalScene(GREY, "coffee", "food and drink")],
    "evening.mp4": [EvalScene("moon", "weather", "weather"),
                    EvalScene("astronaut", "rocket", "space"),
                    EvalScene(BEIGE, None, None),
                    EvalScene("camera", "football", "sport")],
}


def labelled() -> list[tuple[str, int, EvalScene]]:
    """(file, scene index, scene) for every labelled scene."""
    return [(name, i, s) for name, scenes in VIDEOS.items() for i, s in enumerate(scenes)]


def make_videos(folder: Path) -> tuple[Path, Path]:
    """The videos (one folder) and the taxonomy file; returns (videos folder, taxonomy path)."""
    from vidan import synth
    from vidan.synth import Scene

    folder.mkdir(parents=True, exist_ok=True)
    videos = folder / "videos"
    videos.mkdir(exist_ok=True)
    photos: dict[str, np.ndarray] = {}
    for name, scenes in VIDEOS.items():
        if (videos / name).exists():
            continue
        rendered = []
        for s in scenes:
            if isinstance(s.picture, str):
                img = photos.setdefault(s.picture, synth.photo(s.picture))
                rendered.append(Scene(SCENE_S, img))
            else:
                rendered.append(Scene(SCENE_S, tuple(s.picture)))
        speech = [(i * SCENE_S + SPEECH_AT_S, synth.speech_clip(s.speech)) for i, s in enumerate(scenes) if s.speech]
        audio = None
        if speech:
            audio = synth.concat_audio(folder / (name + ".wav"), speech)
        synth.write_video(videos / name, rendered, audio=audio)
        if audio:
            audio.unlink()
    tax = folder / "everyday.yaml"
    tax.write_text(EVAL_TAXONOMY)
    return videos, tax


_BUILT: dict[str, Path] = {}


def build(folder: Path, overrides: Optional[dict] = None) -> Path:
    """Analyse the eval videos into ``folder/report`` (once per process); returns the report folder."""
    if str(folder) not in _BUILT:
        import vidan
        from vidan.config import Config

        videos, tax = make_videos(folder)
        cfg = Config().replace(tags={"taxonomy": str(tax)}, **(overrides or {}))
        # reprocess: a kept folder is analysed again by the code as it is now
        summary = vidan.analyze([videos], out=folder / "report", config=cfg, executor="local", reprocess=True)
        assert summary.ok == len(VIDEOS), summary.line()
        _BUILT[str(folder)] = folder / "report"
    return _BUILT[str(folder)]


@dataclass
class Case:
    """One labelled segment of the report: its row and what it should be tagged."""

    file: str
    scene: int
    truth: Optional[str]
    row: dict


def cases(report: Path) -> list[Case]:
    """The report's segments, each matched to the scene under its middle."""
    from vidan.report import load_report

    seg = load_report(report).segments
    out = []
    for row in seg.to_dict("records"):
        file = Path(row["path"]).name
        mid = (row["start_s"] + row["end_s"]) / 2
        k = min(int(mid // SCENE_S), len(VIDEOS[file]) - 1)
        out.append(Case(file, k, VIDEOS[file][k].truth, row))
    return out


def report_top(row: dict) -> Optional[str]:
    """The report's own top classification tag, or None."""
    tags = [t for t in (row["tags"] if row["tags"] is not None else []) if t["kind"] == "classification"]
    return tags[0]["label"] if tags else None


def score(cases: Sequence[Case], predict: Callable[[Case], Optional[str]] = lambda c: report_top(c.row)) -> dict:
    """Top-1 accuracy, precision and recall of one prediction per segment (None: no class).

    Accuracy counts a segment right when its top class is its label, or when it has no
    label and no class. Precision: right classes among the classes given; recall: right
    classes among the segments that have a label.
    """
    pred = [predict(c) for c in cases]
    right = sum(p == c.truth for p, c in zip(pred, cases))
    given = sum(p is not None for p in pred)
    hits = sum(p is not None and p == c.truth for p, c in zip(pred, cases))
    labelled_n = sum(c.truth is not None for c in cases)
    return {"segments": len(cases), "given": given, "accuracy": right / max(len(cases), 1),
            "precision": hits / given if given else 0.0, "recall": hits / max(labelled_n, 1),
            "wrong": [f"{c.file}#{c.scene}: {p} (want {c.truth})" for p, c in zip(pred, cases) if p != c.truth]}


# --- each modality alone, from the report's own columns ------------------------------


class Modalities:
    """Top classes from one modality's columns alone, scored the way analysis scores them
    (``vidan.tags.classify_cues``): the visual description (classifier and detectors), the
    transcript's embedding, the sound-event tags."""

    def __init__(self, taxonomy_path: Path):
        from vidan.labels import label_bank
        from vidan.models.text import load_text_encoder
        from vidan.models.vision import imagenet_labels
        from vidan.tags import class_baseline, class_embeddings, load_taxonomy

        self.encoder = load_text_encoder("cpu")
        self.taxonomy = load_taxonomy(taxonomy_path)
        self.class_emb = class_embeddings(self.taxonomy, self.encoder.encode)
        self.baseline = class_baseline(self.class_emb, label_bank(self.encoder, imagenet_labels()))

    def _top(self, cues) -> Optional[str]:
        from vidan.tags import classify_cues

        tags = classify_cues(cues, self.class_emb, self.taxonomy.labels, visual_baseline=self.baseline)
        return tags[0].label if tags else None

    def visual(self, case: Case) -> Optional[str]:
        from vidan.tags import Cue

        r = case.row
        if r["visual_embedding"] is None:
            return None
        seen = [t["score"] for t in r["tags"] if t["kind"] == "visual" and t["label"] == "person"]
        weight = max([r["visual_confidence"] or 0.0, *seen])
        return self._top([Cue(np.asarray(r["visual_embedding"], np.float32), weight, "visual", against_labels=True)])

    def text(self, case: Case) -> Optional[str]:
        from vidan.tags import Cue, text_weight

        r = case.row
        if r["text_embedding"] is None:
            return None
        return self._top([Cue(np.asarray(r["text_embedding"], np.float32), text_weight(r["transcript"]), "text")])

    def sounds(self, case: Case) -> Optional[str]:
        from vidan.tags import EVENT_GROUPS, Cue

        heard = [(EVENT_GROUPS[t["label"]][0], t["score"]) for t in case.row["tags"]
                 if t["kind"] == "audio" and t["label"] in EVENT_GROUPS and t["label"] != "speech"]
        if not heard:
            return None
        vecs = self.encoder.encode([p for p, _ in heard])
        return self._top([Cue(v, s, "audio") for v, (_, s) in zip(vecs, heard)])
