"""What callers of the depth model exchange with it: the model input size and the result. Kept
apart from the model so the processes that only call it (Ray processing tasks, the Ray Data job's
decoders) never import torch or transformers, a few hundred MB each."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INPUT_SIZE = 518
PATCH = 14


@dataclass(frozen=True)
class DepthResult:
    """One image's depth (float32, larger = nearer) at the requested size, or why it failed."""

    depth: np.ndarray | None
    raw_min: float = 0.0
    raw_max: float = 0.0
    error: str | None = None
    revision: str | None = None  # the model revision that produced it (what the replica loaded)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class PhotoDepth:
    """The depth replica's answer for a photo sent as its encoded bytes: the depth, and the
    gallery renditions made from the same decode (the preview JPEG, and the thumbnail's pixels
    for the caller to encode as WebP on its own CPU)."""

    depth: DepthResult
    preview_jpeg: bytes | None = None
    thumbnail: np.ndarray | None = None  # H×W×3 uint8, upright, THUMBNAIL_SIZE on its long side
    decoder: str | None = None  # "nvjpeg" (on the GPU) or "pillow"


def target_size(height: int, width: int, size: int = INPUT_SIZE, multiple: int = PATCH):
    """The transformers DPT processor's output size with keep_aspect_ratio and
    ensure_multiple_of (same rounding), so both paths feed the model the same shape."""
    scale_h, scale_w = size / height, size / width
    if abs(1 - scale_w) < abs(1 - scale_h):
        scale_h = scale_w
    else:
        scale_w = scale_h
    return _multiple_of(scale_h * height, multiple), _multiple_of(scale_w * width, multiple)


def _multiple_of(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)
