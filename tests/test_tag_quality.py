"""Classification tags are right on labelled videos with a user's own taxonomy.

The evaluation set (``tests/tag_eval.py``, shared with ``benchmarks/bench_tags.py``):
real photos and flat scenes, real speech that matches a scene, or none, or talk over a
blank picture; a taxonomy of eight everyday classes that is not vidan's default. The
pipeline runs for real (``executor="local"``). Before classes were scored per
modality (the fused vector against the class prompts, cosine 0.30), this set scored
0.61 top-1 (11 of 28 wrong: blank and unreadable pictures pulled into "sport").
"""

import pytest
import tag_eval

TOP1_MIN = 0.8
# the real pipeline (Whisper included) over 7 videos of 24 s: about 3 minutes on 2 cores
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return tag_eval.build(tmp_path_factory.mktemp("tag_eval"))


def test_top_class_is_right_for_most_labelled_segments(report):
    cases = tag_eval.cases(report)
    assert len(cases) >= 25
    s = tag_eval.score(cases)
    assert s["accuracy"] >= TOP1_MIN, s
    # abstaining is not how it gets there: most labelled segments do get their class
    assert s["recall"] >= 0.7 and s["precision"] >= 0.8, s


def test_a_segment_with_nothing_to_read_gets_no_class(report):
    blank = [c for c in tag_eval.cases(report) if c.truth is None]
    assert blank and all(tag_eval.report_top(c.row) is None for c in blank)
