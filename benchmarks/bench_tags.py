"""Classification tags against labelled segments: each modality alone and together.

    .venv/bin/python benchmarks/bench_tags.py [--keep DIR] [--json PATH]

Builds the labelled evaluation set of ``tests/tag_eval.py`` (real photos from
scikit-image and flat generated scenes, several scenes a video cut hard one into the
next, bundled English speech that matches its scene's class, or none, or talk over a
blank picture; a user's taxonomy of eight everyday classes with one-line descriptions),
analyses it with the real pipeline (``executor="local"``) and prints one markdown table:
top-1 accuracy (the top classification tag is the label, or no tag where no class fits),
precision (right among the tags given) and recall (right among labelled segments) for

* the report's own tags (every modality's evidence added, ``vidan.tags.classify_cues``);
* each modality alone, scored the same way from the report's columns: the visual
  description (image classifier and people/face detectors), the transcript, the sound
  events.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, block, header, machine, parser, publish

sys.path.insert(0, str(ROOT / "tests"))
import tag_eval  # noqa: E402

NAME = "bench_tags"
COLUMNS = ("tags from", "top-1 accuracy", "precision", "recall", "tags given")
HEADER = header(COLUMNS)
ROWS = ("report (all modalities)", "visual alone", "transcript alone", "sound events alone")


def measure(keep: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = keep or Path(tmp)
        t0 = time.perf_counter()
        report = tag_eval.build(folder)
        analyse_s = time.perf_counter() - t0
        cases = tag_eval.cases(report)
        alone = tag_eval.Modalities(folder / "everyday.yaml")
        predictors = dict(zip(ROWS, (lambda c: tag_eval.report_top(c.row), alone.visual, alone.text, alone.sounds)))
        rows = []
        for name, predict in predictors.items():
            s = tag_eval.score(cases, predict)
            rows.append({"from": name, **{k: s[k] for k in ("accuracy", "precision", "recall", "given", "wrong")}})
    return {"analyse_s": analyse_s, "segments": len(cases), "labelled": sum(c.truth is not None for c in cases),
            "videos": len(tag_eval.VIDEOS), "rows": rows}


def render(record: dict[str, Any]) -> str:
    wrong = record["rows"][0]["wrong"]
    title = (f"**Classification tags** (`benchmarks/{NAME}.py`): {record['segments']} segments of "
             f"{record['videos']} videos ({record['labelled']} with a class, the rest should get none), a user's "
             f"taxonomy of eight everyday classes; each modality alone scored the same way from the report's columns "
             f"(analysis took {record['analyse_s']:.0f} s). Wrong in the report: "
             + ("; ".join(wrong) if wrong else "none") + ".")
    cells = [(r["from"], f"{r['accuracy']:.2f}", f"{r['precision']:.2f}", f"{r['recall']:.2f}",
              f"{r['given']}/{record['segments']}") for r in record["rows"]]
    return block(title, record["machine"], COLUMNS, cells)


def main() -> int:
    ap = parser(NAME, __doc__)
    ap.add_argument("--keep", type=Path, help="build the videos and report in DIR and keep them")
    args = ap.parse_args()
    m = machine()
    publish({"benchmark": NAME, "machine": m, **measure(args.keep)}, render, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
