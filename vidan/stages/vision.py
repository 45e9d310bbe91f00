"""Image encoder stage: frames of many parts (of many videos) in one batch through the
image classifier; each part comes back as a ``FramePart``. GPU when the cluster has
one; the frames arrive already cropped to the model's input, so nothing larger than
that crosses the object store."""

from __future__ import annotations

import numpy as np

from vidan.config import Config
from vidan.records import DecodedPart, FramePart


class VisionStage:
    def __init__(self, config: Config, device: str = "auto", threads: int = 0):
        from vidan.models.device import pick_device, set_threads
        from vidan.models.vision import load_classifier

        self.config = config
        self.device = pick_device(device)
        self.classifier = load_classifier(self.device, threads=threads)
        if self.classifier.runtime == "torch":
            set_threads(threads)

    def model_ids(self) -> dict[str, str]:
        return {"vision": self.classifier.model_id}

    def process(self, parts: list[DecodedPart]) -> list[FramePart]:
        sizes = [len(p.images) for p in parts]
        images = [p.images for p in parts if len(p.images)]
        if images:
            probs = self.classifier.probs(np.concatenate(images)).astype(np.float32)
        else:
            probs = np.zeros((0, len(self.classifier.labels)), np.float32)
        out, at = [], 0
        for p, n in zip(parts, sizes):
            out.append(FramePart(
                span=p.span, times_s=p.times_s, probs=probs[at:at + n], cuts=p.cuts, backend=p.backend,
                frames_decoded=p.frames_decoded, frames_sampled=n, frames_expected=p.frames_expected,
                notes=list(p.notes), fallback=p.fallback, faces=p.faces, people=p.people, boxes=p.boxes,
            ))
            at += n
        return out
