"""Standing people with OpenCV's HOG people detector (Dalal and Triggs' linear SVM, shipped in OpenCV).

``HOGDescriptor`` is missing from ``opencv-python`` 5.0 (which scenedetect pulls in) and
present in ``opencv-contrib-python-headless`` 5.0; both packages write ``cv2/``, so
``make install`` reinstalls the contrib build last. The detector finds upright, mostly
whole people; it misses cyclists, sitting people and close-ups.
"""

from __future__ import annotations

import numpy as np

from vidan.models.faces import _check_rgb, _resize, nms
from vidan.records import Box

WINDOW = (64, 128)  # width, height of HOG's detection window: smaller people are not found
_NMS_IOU = 0.45


class PersonDetector:
    """HOG people detector on one frame at a time; the SVM's margin is the box's score."""

    def __init__(self, min_score: float = 2.0, side: int = 640):
        import cv2

        if not hasattr(cv2, "HOGDescriptor"):
            raise RuntimeError(
                f"cv2 at {cv2.__file__} has no HOGDescriptor: it is opencv-python's build. Reinstall the "
                "contrib build over it: pip install --force-reinstall --no-deps opencv-contrib-python-headless==5.0.0.93")
        if side < WINDOW[1]:
            raise ValueError(f"side must be at least {WINDOW[1]} pixels, got {side}")
        self.min_score = min_score
        self.side = side
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.model_id = f"hog-people@opencv=={cv2.__version__}"

    def detect(self, rgb: np.ndarray) -> list[Box]:
        rgb = _check_rgb(rgb)
        H, W = rgb.shape[:2]
        # HOG's pyramid only shrinks the frame, so a person shorter than 128 px at this size is
        # never seen: small frames are enlarged to `side` as well as large ones reduced.
        s = self.side / max(H, W)
        h, w = max(WINDOW[1], round(H * s)), max(WINDOW[0], round(W * s))
        img = _resize(rgb, h, w)
        # a pyramid step of 1.1 (OpenCV's example uses 1.05) halves the cost; the
        # detector's own tolerance to scale covers the steps between
        rects, weights = self._hog.detectMultiScale(img, winStride=(8, 8), padding=(8, 8), scale=1.1)
        if len(rects) == 0:
            return []
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(weights, dtype=np.float64).ravel()
        good = scores >= self.min_score
        boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], axis=1)
        boxes, scores = boxes[good], scores[good]
        boxes = np.clip(boxes, 0, [w, h, w, h])
        return [Box("person", float(boxes[i, 0] / w), float(boxes[i, 1] / h), float(boxes[i, 2] / w),
                    float(boxes[i, 3] / h), float(scores[i]))
                for i in nms(boxes, scores, _NMS_IOU)]
