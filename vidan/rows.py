"""Report rows: segment features -> embeddings and tags -> dicts in the report schema.

The models come in through a small object (``FinishStage``) so that this module holds
only the shaping of rows, and can be fed a fake-free, real encoder in tests.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from vidan.assemble import SegmentFeatures
from vidan.fusion import SOUND_WEIGHT, conse, describe, fuse
from vidan.records import FAILED, MediaInfo
from vidan.report import display_path
from vidan.report import EMBED_DIM
from vidan.tags import (EVENT_GROUPS, EVENT_MIN, FRAMES_CUE, PHRASE_CUE, TEXT_CUE, Tag, audio_tags, class_baseline,
                        classify_many, cue_table, event_groups, is_filler, keywords, label_keywords, language_tag,
                        person_phrases, person_tags, text_weight, visual_labels)

# Sentence embeddings of the fixed phrases (detectors, sound groups), per text model.
_PHRASES: dict[tuple[str, str], np.ndarray] = {}


def _phrase_vectors(text, phrases) -> dict[str, np.ndarray]:
    model = getattr(text, "model_id", str(id(text)))
    todo = sorted({p for p in phrases if (model, p) not in _PHRASES})
    if todo:
        for p, v in zip(todo, text.encode(todo)):
            _PHRASES[(model, p)] = np.asarray(v, np.float32)
    return {p: _PHRASES[(model, p)] for p in phrases}


def _vec(x: Optional[np.ndarray]) -> Optional[list[float]]:
    return None if x is None else np.asarray(x, np.float32).tolist()


def segment_rows(video_id: str, path: str, feats: Sequence[SegmentFeatures], models, provenance: dict) -> list[dict]:
    cfg = models.config
    texts = {i: f.transcript for i, f in enumerate(feats) if f.transcript}
    encoded = models.text.encode(list(texts.values())) if texts else np.zeros((0, 0), np.float32)
    text_emb = dict(zip(texts.keys(), encoded))
    event_labels = getattr(models, "event_labels", None)
    baseline = class_baseline(models.class_emb, models.label_emb)
    seen = []
    for f in feats:
        n_people = sum(1 for b in f.boxes or () if b.kind == "person")
        groups = event_groups(f.events, event_labels)
        seen.append((person_phrases(f.person, f.n_faces, n_people), groups))
    phrases = _phrase_vectors(models.text, {p for det, _ in seen for p, _ in det}
                              | {EVENT_GROUPS[g][0] for _, groups in seen for g in groups})
    vw, tw = 2 * cfg.fusion.visual_weight, 2 * cfg.fusion.text_weight  # 1 each by default
    # each segment's evidence for classification, stored in its row (re-tagging reads it back)
    readings = [conse(f.mean_probs, models.label_emb) if f.mean_probs is not None else (None, None) for f in feats]
    cue_rows = []
    for i, f in enumerate(feats):
        det, groups = seen[i]
        heard = [(EVENT_GROUPS[g][0], s) for g, s in groups.items() if g != "speech" and s >= EVENT_MIN]
        cue_rows.append([{"kind": FRAMES_CUE, "phrase": None, "weight": float((readings[i][1] or 0.0) * vw)},
                         *({"kind": PHRASE_CUE, "phrase": p, "weight": float(w * vw)} for p, w in det),
                         {"kind": TEXT_CUE, "phrase": None, "weight": float(text_weight(f.transcript) * tw)},
                         *({"kind": PHRASE_CUE, "phrase": p, "weight": float(s)} for p, s in heard)])
    dim = models.class_emb.shape[1] if len(models.class_emb) else EMBED_DIM
    table = cue_table(cue_rows, [readings[i][0] for i in range(len(feats))], [text_emb.get(i) for i in range(len(feats))],
                      dim)
    top, scores, chosen = classify_many(table, np.stack([phrases[p] for p in table.phrases]) if table.phrases
                                        else np.zeros((0, dim), np.float32), models.class_emb, baseline,
                                        threshold=cfg.tags.threshold, top_k=cfg.tags.top_k)
    rows = []
    for i, f in enumerate(feats):
        det, groups = seen[i]
        conse_v, visual_conf = readings[i]
        # the visual description: what the classifier saw, and the people and faces found
        visual = describe([(conse_v, visual_conf or 0.0)] + [(phrases[p], w) for p, w in det if w > 0])
        heard = [(EVENT_GROUPS[g][0], s) for g, s in groups.items() if g != "speech" and s >= EVENT_MIN]
        sounds = describe([(phrases[p], s) for p, s in heard])
        fused = fuse({"visual": visual, "text": text_emb.get(i), "sounds": sounds},
                     {"visual": cfg.fusion.visual_weight, "text": cfg.fusion.text_weight, "sounds": SOUND_WEIGHT})
        has_any = any(fused.present.values())
        vis = visual_labels(f.mean_probs, models.labels, top_k=cfg.tags.visual_top_k, min_score=cfg.tags.visual_min_score)
        who = person_tags(f.person, f.n_faces)
        kw = keywords(f.transcript, cfg.tags.keywords)
        tags = [
            *(Tag(models.taxonomy.labels[c], float(sc), "fused", "classification")
              for c, sc, ok in zip(top[i], scores[i], chosen[i]) if ok),
            *who,
            *vis,
            *audio_tags(f.speech_ratio, f.loudness_db, groups or None),
            *language_tag(f.language, f.language_probability, any(not is_filler(w.text) for w in f.words or ())),
            *kw,
        ]
        seg = f.segment
        kw_labels = list(dict.fromkeys([t.label for t in kw] + [t.label for t in label_keywords([*who, *vis])]))
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
            "language_detected": f.detected_language,
            "language_detected_probability": f.detected_probability,
            "no_speech_prob": f.no_speech_prob,
            "speech_ratio": f.speech_ratio,
            "loudness_db": f.loudness_db,
            "visual_labels": [{"label": t.label, "score": t.score} for t in vis] if f.mean_probs is not None else None,
            "n_faces": f.n_faces,
            "boxes": None if f.boxes is None else [
                {"kind": b.kind, "x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1, "score": b.score} for b in f.boxes],
            "tags": [t.as_dict() for t in tags],
            "tag_labels": [t.label for t in tags],
            "keywords": kw_labels,
            "has_visual": fused.present["visual"],
            "has_text": fused.present["text"],
            "has_audio": f.speech_ratio is not None,
            "visual_weight": fused.weights["visual"],
            "text_weight": fused.weights["text"],
            "embedding": _vec(fused.embedding) if has_any else None,
            "visual_embedding": _vec(visual),  # the classifier's reading and the detectors', together
            "frames_embedding": _vec(conse_v),  # the classifier's reading alone (ConSE)
            "cues": cue_rows[i],
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
            "sample_aspect": info.sample_aspect,
            "audio_codec": info.audio_codec,
            "audio_channels": info.audio_channels,
            "audio_sample_rate": info.audio_sample_rate,
        })
    if status == FAILED:
        row["n_segments"] = 0
    row.update(extra)
    return row
