"""Finish stage: a video's part results -> segment rows with embeddings and tags."""

from __future__ import annotations

import time

from vidan.config import Config


class FinishStage:
    def __init__(self, config: Config, device: str = "auto", threads: int = 0):
        from vidan.labels import label_bank
        from vidan.models.text_fast import load_fast_text_encoder
        from vidan.models.vision import imagenet_labels
        from vidan.retag import taxonomy_embeddings
        from vidan.tags import load_taxonomy

        self.config = config
        # MiniLM in numpy: the same vectors as sentence-transformers (tests/test_index.py)
        # without importing torch, which cost every run ~6 s of start-up on a small
        # machine; a few transcripts a video need no GPU
        self.text = load_fast_text_encoder()
        self.labels = imagenet_labels()
        self.label_emb = label_bank(self.text, self.labels)
        self.taxonomy = load_taxonomy(config.tags.taxonomy)
        # cached on disk as re-tagging caches it: a nightly run re-embeds nothing
        self.class_emb = taxonomy_embeddings(self.taxonomy, encoder=self.text)
        self.model_id = self.text.model_id
        self.event_labels = None
        if config.detect.sound_events:
            from vidan.models.sound_events import yamnet_labels

            self.event_labels = list(yamnet_labels())

    def model_ids(self) -> dict[str, str]:
        return {"text": self.model_id, "taxonomy": self.taxonomy.id}

    def process(self, jobs: list) -> list:
        return [self._one(job) for job in jobs]

    def _one(self, job):
        from vidan.assemble import gather
        from vidan.rows import segment_rows

        t0 = time.perf_counter()
        feats = gather(job.parts, self.config)
        # This stage's own models are named here, by the process that used them: on Ray a
        # job can be sent before the driver has heard this actor's ids (it was still
        # loading), and its rows would name no text model.
        prov = {**job.provenance, "models": {**job.provenance.get("models", {}), **self.model_ids()}}
        rows = segment_rows(job.video_id, job.path, feats, self, prov)
        return rows, time.perf_counter() - t0
