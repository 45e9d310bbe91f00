"""Classification tags recomputed from the embeddings a report already stores.

No video is opened and no image or speech model runs: each segment's fused embedding is
scored against the taxonomy's class embeddings, as ``vidan.tags.classify`` does during
analysis, and the ``tags`` and ``tag_labels`` columns are rebuilt. Works on whole Arrow
tables with numpy, so 100,000 segments take seconds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vidan.report import EMBED_DIM, TAG


def classification_tags(emb: np.ndarray, present: np.ndarray, class_emb: np.ndarray, labels: Sequence[str], *,
                        threshold: float, top_k: int) -> list[list[dict]]:
    """Per row, the classes whose cosine reaches ``threshold``, best first (at most ``top_k``)."""
    out: list[list[dict]] = [[] for _ in range(len(emb))]
    if not len(emb):
        return out
    scores = emb @ class_emb.T.astype(np.float32)
    k = min(top_k, scores.shape[1])
    top = np.argsort(-scores, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    for i in np.nonzero(present)[0]:
        out[i] = [{"label": labels[j], "score": float(s), "source": "fused", "kind": "classification"}
                  for j, s in zip(top[i], top_scores[i]) if s >= threshold]
    return out


def _embeddings(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    arr = col.combine_chunks()
    present = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    # a fixed-size list keeps a slot for every row, null or not: the reshape is exact
    values = arr.values.slice(arr.offset * EMBED_DIM, len(arr) * EMBED_DIM)
    emb = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(arr), EMBED_DIM)
    emb = np.where(present[:, None], np.nan_to_num(emb), 0.0).astype(np.float32)
    present &= np.any(emb != 0, axis=1)
    return emb, present


def retag_segments(segments: pa.Table, class_emb: np.ndarray, labels: Sequence[str], *, threshold: float,
                   top_k: int, tag_key: str, taxonomy_id: str) -> pa.Table:
    """``segments`` with classification tags from ``class_emb``; other tags kept in order."""
    if segments.num_rows == 0:
        return segments
    emb, present = _embeddings(segments.column("embedding"))
    new = classification_tags(emb, present, class_emb, labels, threshold=threshold, top_k=top_k)
    old = segments.column("tags").to_pylist()
    tags = [n + [t for t in (o or []) if t["kind"] != "classification"] for n, o in zip(new, old)]
    t = segments.set_column(segments.schema.get_field_index("tags"), "tags", pa.array(tags, pa.list_(TAG)))
    t = t.set_column(t.schema.get_field_index("tag_labels"), "tag_labels",
                     pa.array([[x["label"] for x in row] for row in tags], pa.list_(pa.string())))
    return _provenance(t, tag_key, taxonomy_id)


def _provenance(t: pa.Table, tag_key: str, taxonomy_id: str) -> pa.Table:
    n = t.num_rows
    t = t.set_column(t.schema.get_field_index("tag_key"), "tag_key", pa.array([tag_key] * n, pa.string()))
    models = t.column("models").combine_chunks()
    if len(models):
        fields = {f.name: models.field(f.name) for f in models.type}
        fields["taxonomy"] = pa.array([taxonomy_id] * n, pa.string())
        rebuilt = pa.StructArray.from_arrays(list(fields.values()), names=list(fields),
                                             mask=pc.is_null(models))
        t = t.set_column(t.schema.get_field_index("models"), "models", rebuilt)
    return t


def retag_videos(videos: pa.Table, tag_key: str, taxonomy_id: str) -> pa.Table:
    return _provenance(videos, tag_key, taxonomy_id) if videos.num_rows else videos


def retag_report(store, config, tag_key: str, *, committer=None, device: str = "cpu", run_id: str = "retag") -> int:
    """Re-tag every group whose rows carry another ``tag_key``, in one commit.

    Returns how many videos were re-tagged. Loads only the text model (to embed the
    taxonomy's prompts); no video is opened.
    """
    from vidan.models.device import pick_device
    from vidan.models.text import load_text_encoder
    from vidan.report import DATASETS
    from vidan.tags import class_embeddings, load_taxonomy

    tax = load_taxonomy(config.tags.taxonomy)
    enc = load_text_encoder(pick_device(device))
    class_emb = class_embeddings(tax, enc.encode)
    count = 0
    tag = committer.run_id if committer is not None else run_id

    def rewrite(g):
        nonlocal count
        vt = store._read_files([g.videos], DATASETS["videos"])
        stale = sum(1 for k in vt.column("tag_key").to_pylist() if k != tag_key)
        if not stale:
            return g
        st = (store._read_files([g.segments], DATASETS["segments"]) if g.segments
              else DATASETS["segments"].empty_table())
        st = retag_segments(st, class_emb, tax.labels, threshold=config.tags.threshold, top_k=config.tags.top_k,
                            tag_key=tag_key, taxonomy_id=tax.id)
        count += stale
        return store.write_group(retag_videos(vt, tag_key, tax.id), st, tag)

    if committer is not None:
        committer.flush(rewrite=rewrite, change={"retagged": 1})
    else:
        store.commit(rewrite=rewrite, tag=tag, meta={"run_id": run_id, "tag_key": tag_key, "change": {"retagged": 1}})
    return count
