"""Report rows: segment features -> embeddings and tags -> dicts in the report schema.

The models come in through a small object (``FinishStage``) so that this module holds
only the shaping of rows, and can be fed a fake-free, real encoder in tests.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from vidan.assemble import SegmentFeatures
from vidan.fusion import conse, fuse
from vidan.records import FAILED, MediaInfo
from vidan.report import display_path
from vidan.tags import audio_tags, classify, keywords, label_keywords, language_tag, visual_labels


def _vec(x: Optional[np.ndarray]) -> Optional[list[float]]:
    return None if x is None else np.asarray(x, np.float32).tolist()


def segment_rows(video_id: str, path: str, feats: Sequence[SegmentFeatures], models, provenance: dict) -> list[dict]:
    cfg = models.config
    texts = {i: f.transcript for i, f in enumerate(feats) if f.transcript}
    encoded = models.text.encode(list(texts.values())) if texts else np.zeros((0, 0), np.float32)
    text_emb = dict(zip(texts.keys(), encoded))
    rows = []
    for i, f in enumerate(feats):
        visual, visual_conf = conse(f.mean_probs, models.label_emb) if f.mean_probs is not None else (None, None)
        fused = fuse({"visual": visual, "text": text_emb.get(i)},
                     {"visual": cfg.fusion.visual_weight, "text": cfg.fusion.text_weight})
        has_any = any(fused.present.values())
        vis = visual_labels(f.mean_probs, models.labels, top_k=cfg.tags.visual_top_k, min_score=cfg.tags.visual_min_score)
        kw = keywords(f.transcript, cfg.tags.keywords)
        tags = [
            *classify(fused.embedding if has_any else None, models.class_emb, models.taxonomy.labels,
                      threshold=cfg.tags.threshold, top_k=cfg.tags.top_k),
            *vis,
            *audio_tags(f.speech_ratio, f.loudness_db),
            *language_tag(f.language, f.language_probability, bool(f.words)),
            *kw,
        ]
        seg = f.segment
        kw_labels = list(dict.fromkeys([t.label for t in kw] + [t.label for t in label_keywords(vis)]))
        rows.append({
            "video_id": video_id,
            "path": display_path(path),
            "segment_index": seg.index,
            "start_s": seg.start_s,
            "end_s": seg.end_s,
            "start_reason": seg.reason,
            "keyframe_s": seg.keyframe_s if f.mean_probs is not None else None,
            "frames_sampled": int(len(f.frame_times)),
            "frame_times": [float(t) for t in f.frame_times] if f.mean_probs is not None else None,
            "transcript": f.transcript,
            "words": None if f.words is None else [
                {"start_s": w.start_s, "end_s": w.end_s, "text": w.text.strip(), "probability": w.probability}
                for w in f.words],
            "language": f.language,
            "language_probability": f.language_probability,
            "no_speech_prob": f.no_speech_prob,
            "speech_ratio": f.speech_ratio,
            "loudness_db": f.loudness_db,
            "visual_labels": [{"label": t.label, "score": t.score} for t in vis] if f.mean_probs is not None else None,
            "tags": [t.as_dict() for t in tags],
            "tag_labels": [t.label for t in tags],
            "keywords": kw_labels,
            "has_visual": fused.present["visual"],
            "has_text": fused.present["text"],
            "has_audio": f.speech_ratio is not None,
            "visual_weight": fused.weights["visual"],
            "text_weight": fused.weights["text"],
            "embedding": _vec(fused.embedding) if has_any else None,
            "visual_embedding": _vec(visual),
            "visual_confidence": visual_conf,
            "text_embedding": _vec(text_emb.get(i)),
            "audio_embedding": _vec(f.acoustic),
            **provenance,
        })
    return rows


def video_row(video_id: str, path: str, *, status: str, info: Optional[MediaInfo] = None,
              error_stage: Optional[str] = None, error_message: Optional[str] = None,
              notes: Sequence[str] = (), size_bytes: Optional[int] = None, provenance: dict,
              config_json: str, **extra: Any) -> dict:
    row: dict[str, Any] = {
        "video_id": video_id,
        "path": display_path(path),
        "status": status,
        "error_stage": error_stage,
        "error_message": error_message,
        "notes": list(notes),
        "size_bytes": size_bytes,
        "config": config_json,
        **provenance,
    }
    if info is not None:
        row.update({
            "size_bytes": info.size_bytes,
            "container": info.container,
            "duration_s": info.duration_s,
            "start_time_s": info.start_time_s,
            "has_video": info.has_video,
            "has_audio": info.has_audio,
            "n_video_streams": info.n_video_streams,
            "n_audio_streams": info.n_audio_streams,
            "video_codec": info.video_codec,
            "width": info.width,
            "height": info.height,
            "frame_rate": info.frame_rate,
            "rotation": info.rotation,
            "audio_codec": info.audio_codec,
            "audio_channels": info.audio_channels,
            "audio_sample_rate": info.audio_sample_rate,
        })
    if status == FAILED:
        row["n_segments"] = 0
    row.update(extra)
    return row
