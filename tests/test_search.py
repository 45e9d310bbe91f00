"""Ranking logic on hand-made segment rows: no model, no video."""

import numpy as np
import pandas as pd

from vidan.fusion import l2_normalize
from vidan.search import lexical_overlap, rank


def unit(*v):
    return l2_normalize(np.array(v, np.float32)).tolist()


def frame(rows):
    base = {"video_id": "v", "path": "/p", "segment_index": 0, "start_s": 0.0, "end_s": 1.0, "transcript": None,
            "tag_labels": [], "keywords": [], "embedding": None, "visual_embedding": None, "text_embedding": None,
            "visual_confidence": None, "visual_weight": 0.0, "text_weight": 0.0}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_best_modality_ranks_and_is_named():
    seg = frame([
        {"path": "/said", "text_embedding": unit(1, 0, 0), "embedding": unit(1, 1, 0), "text_weight": 1.0},
        {"path": "/seen", "visual_embedding": unit(0, 1, 0), "embedding": unit(0, 1, 0), "visual_confidence": 1.0,
         "visual_weight": 1.0},
    ])
    hits = rank(np.array(unit(1, 0, 0)), seg, top=2)
    assert [h.path for h in hits] == ["/said", "/seen"] and hits[0].modality == "text"
    hits = rank(np.array(unit(0, 1, 0)), seg, top=2)
    assert hits[0].path == "/seen" and hits[0].modality in ("visual", "fused")


def test_unsure_pictures_claim_less():
    seg = frame([
        {"path": "/sure", "visual_embedding": unit(1, 0.2), "embedding": unit(1, 0.2), "visual_confidence": 0.9,
         "visual_weight": 1.0},
        {"path": "/guess", "visual_embedding": unit(1, 0), "embedding": unit(1, 0), "visual_confidence": 0.2,
         "visual_weight": 1.0},
    ])
    assert rank(np.array(unit(1, 0)), seg, top=1)[0].path == "/sure"


def test_lexical_overlap_counts_query_words_in_transcript_and_keywords():
    seg = frame([{"transcript": "You need flour and yeast.", "keywords": ["bread"]}, {"transcript": None}])
    assert list(lexical_overlap("flour, yeast and bread", seg)) == [1.0, 0.0]
    assert list(lexical_overlap("the", seg)) == [0.0, 0.0]  # stop words only: no lexical signal


def test_null_transcripts_and_empty_reports():
    seg = frame([{"visual_embedding": unit(1, 0), "embedding": unit(1, 0), "visual_confidence": 1.0,
                  "visual_weight": 1.0, "transcript": float("nan")}])
    hit = rank(np.array(unit(1, 0)), seg, top=5, query="anything")[0]
    assert hit.transcript is None
    assert rank(np.array(unit(1, 0)), frame([]).iloc[0:0], top=5) == []
