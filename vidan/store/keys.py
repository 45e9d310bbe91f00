"""Identity of inputs and of analyses.

* ``content_hash``: a video is its bytes. The whole file is hashed, streamed in 1 MiB
  reads, so two same-size files that differ anywhere are two videos, and a renamed or
  copied file is the same one.
* ``analysis_key``: everything that changes a video's rows except the taxonomy (see
  ``tag_key``): the config including part length, the models with compute type and
  device class, and the report schema. Known before any model loads, so a rerun can
  tell what is left to do without starting anything.
* ``tag_key``: what classification tags depend on; when only it changes, tags are
  recomputed from stored embeddings instead of analysing again.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from typing import Any, Optional

from vidan.config import Config

# Bump when vidan's own code changes results for the same config and models: every
# video is then analysed again on its next run.
# 5: squeezed (anamorphic) pixels made square, Theora's unchanged frames and Matroska
# track lengths no longer taken for damage, quiet speech tagged speech.
# 6: raw DV's frame rate, wmv sound tracks and mid-GOP captures no longer taken for
# damage, stereo with one side inverted heard.
ANALYSIS_VERSION = 6
# Bump when the tagging rules change tags for the same config and stored features: every
# video is then re-tagged (from its stored features, no decoding) on its next run.
# 2: hesitations and laughter ("hmm", "uh-huh") are no longer transcript keywords, nor
# enough for a segment's language tag.
TAGGING_VERSION = 2
_READ = 1 << 20


def content_hash(path: str | os.PathLike, fd: Optional[int] = None) -> str:
    """blake2b-128 of the file's whole content, as 32 hex characters."""
    h = hashlib.blake2b(digest_size=16)
    own = fd is None
    if own:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        offset = 0
        while True:
            chunk = os.pread(fd, _READ, offset)
            if not chunk:
                break
            h.update(chunk)
            offset += len(chunk)
    finally:
        if own:
            os.close(fd)
    return h.hexdigest()


def _version(pkg: str) -> Optional[str]:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def device_class(device: str) -> str:
    """"cuda" or "cpu": where the models will run, decided without loading one."""
    if device in ("cpu", "cuda"):
        return device
    # no NVIDIA driver, no CUDA: answered without importing torch (seconds on a cold start)
    if not os.path.exists("/proc/driver/nvidia/version") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return "cpu"
    from vidan.models.device import pick_device

    return pick_device("auto")


def effective_compute_type(config: Config, device_cls: str) -> str:
    # mirrors vidan.models.asr: int8 on CPU; CUDA runs float16 unless told otherwise
    ct = config.asr.compute_type
    if device_cls == "cuda" and ct == "int8":
        return "float16"
    return ct


def _h(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def analysis_inputs(config: Config, device_cls: str) -> dict[str, Any]:
    from vidan.report import SCHEMA_VERSION

    d = config.to_dict()
    for k in ("taxonomy", "threshold", "top_k"):
        d["tags"].pop(k)  # classification only: re-tagged from embeddings, see tag_key
    # resource bounds, not results; part length does change results and stays
    d["limits"] = {"part_s": d["limits"]["part_s"]}
    d.pop("commit")  # when rows are committed, not what they hold
    d.pop("workers")  # where stages run, not what they find
    model = config.asr.model
    if os.path.isabs(model) or os.path.exists(model):
        model = os.path.abspath(model)
    return {
        "config": d,
        "asr": {"backend": config.asr.backend, "model": model, "device": device_cls,
                "compute_type": effective_compute_type(config, device_cls),
                "version": _version(config.asr.backend.replace("-", "_")) if config.asr.backend != "none" else None},
        "vision": "efficientnet-lite0", "text": "all-MiniLM-L6-v2", "device": device_cls,
        "schema": SCHEMA_VERSION, "analysis": ANALYSIS_VERSION,
    }


def analysis_key(config: Config, device_cls: str) -> str:
    return _h(analysis_inputs(config, device_cls))


def tag_key(config: Config) -> str:
    from vidan.tags import load_taxonomy

    tax = load_taxonomy(config.tags.taxonomy)
    return _h({"taxonomy": [(c.label, c.prompts) for c in tax.classes], "name": tax.name, "version": tax.version,
               "threshold": config.tags.threshold, "top_k": config.tags.top_k, "text": "all-MiniLM-L6-v2",
               "rules": TAGGING_VERSION})
