"""Depth that is stable over time, for videos. Pure numpy, no model, no I/O.

A monocular depth model predicts relative disparity: each frame comes with its own unknown scale
and shift, so normalising every frame on its own range makes a static wall pulse as a car drives
past. :class:`TemporalStabiliser` takes the raw frames in order and

1. aligns each to a running reference by a robust least-squares fit of a scale and a shift on a
   fixed grid of sample points (iteratively reweighted with Tukey's biweight, so moving parts and
   outliers, which disagree with the reference, get no say);
2. maps the aligned frame to [0, 1] through a normalisation range that is a slow exponential
   moving average of the aligned frames' robust range (percentiles), so one bright pixel or an
   object coming closer does not rescale the whole frame;
3. starts over (reference and range) at a shot cut, detected from the distance between the colour
   histograms of consecutive frames, or when the fit has too few inliers to be trusted.

Each :class:`StableFrame` carries the scale, shift and range it was made with, so the raw
prediction can be recovered from the unit values (:func:`raw_from_unit`): values outside the
range are clipped, which is what the range is for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Tukey's biweight constant: 95 % efficiency for Gaussian residuals.
_TUKEY_C = 4.685
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class StableFrame:
    unit: np.ndarray  # float32 in [0, 1], larger = nearer
    scale: float  # aligned = scale × raw + shift
    shift: float
    range_min: float  # unit = (aligned − range_min) / (range_max − range_min), clipped
    range_max: float
    cut: bool  # the reference was reset at this frame (first frame, shot cut, lost track)

    def quantised(self) -> np.ndarray:
        """The unit values as uint16 (0–65535), as the 16-bit depth video stores them."""
        return unit_to_uint16(self.unit)

    def record(self) -> dict:
        return {"scale": self.scale, "shift": self.shift, "range_min": self.range_min,
                "range_max": self.range_max, "cut": self.cut}


def unit_to_uint16(unit: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(unit, np.float32) * np.float32(65535.0)).astype(np.uint16)


def raw_from_unit(unit: np.ndarray, scale: float, shift: float, range_min: float,
                  range_max: float) -> np.ndarray:
    """The model's raw disparity from unit values (or uint16 ones) and a frame's record."""
    unit = np.asarray(unit)
    if unit.dtype == np.uint16:
        unit = unit.astype(np.float64) / 65535.0
    aligned = range_min + unit * (range_max - range_min)
    return (aligned - shift) / scale


def per_frame_unit(depth: np.ndarray) -> np.ndarray:
    """Each frame normalised on its own min–max range: what depth videos did before, the
    baseline the stabiliser is measured against."""
    depth = np.asarray(depth, np.float32)
    lo, hi = float(depth.min()), float(depth.max())
    return (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)


def flicker(previous: np.ndarray, current: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute change of unit depth between two frames (over ``mask`` when given)."""
    diff = np.abs(np.asarray(current, np.float32) - np.asarray(previous, np.float32))
    return float(diff[mask].mean() if mask is not None else diff.mean())


# ------------------------------------------------------------------------------ shot cuts


def colour_histogram(rgb: np.ndarray, bins: int = 16, max_side: int = 96) -> np.ndarray:
    """Per-channel histograms of an H×W×3 uint8 frame (strided down to about ``max_side``),
    each summing to 1, concatenated."""
    rgb = np.asarray(rgb)
    step = max(1, max(rgb.shape[:2]) // max_side)
    small = rgb[::step, ::step, :3].reshape(-1, 3)
    shift = 8 - int(np.log2(bins))
    quantised = (small >> shift).astype(np.intp) + np.arange(3) * bins
    counts = np.bincount(quantised.ravel(), minlength=3 * bins).astype(np.float64)
    return counts / max(1, small.shape[0])


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance between two :func:`colour_histogram` results, in [0, 1]."""
    return float(0.5 * np.abs(a - b).sum() / 3.0)


class ShotCutDetector:
    """A cut wherever consecutive frames' colour histograms differ by more than ``threshold``
    (total variation, averaged over the channels). Motion and lighting drift move a histogram a
    little from one frame to the next; a cut moves it a lot."""

    def __init__(self, threshold: float = 0.35, bins: int = 16) -> None:
        self.threshold, self.bins = threshold, bins
        self._previous: np.ndarray | None = None
        self.last_distance = 0.0

    def is_cut(self, rgb: np.ndarray) -> bool:
        hist = colour_histogram(rgb, self.bins)
        previous, self._previous = self._previous, hist
        if previous is None:
            self.last_distance = 0.0
            return False
        self.last_distance = histogram_distance(previous, hist)
        return self.last_distance > self.threshold

    def reset(self) -> None:
        self._previous = None


# ------------------------------------------------------------------------------ alignment


def _quantiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Nearest-rank quantiles (0–1) by one partition: np.median and np.percentile cost more in
    Python overhead than in arithmetic on a few thousand samples."""
    n = values.size
    ks = sorted({min(n - 1, max(0, round(q * (n - 1)))) for q in qs})
    part = np.partition(values, ks)
    return [float(part[min(n - 1, max(0, round(q * (n - 1))))]) for q in qs]


def _median(values: np.ndarray) -> float:
    return _quantiles(values, (0.5,))[0]


@dataclass(frozen=True)
class AffineFit:
    scale: float
    shift: float
    inliers: float  # fraction of the samples with a non-zero weight


def robust_affine_fit(x: np.ndarray, y: np.ndarray, iterations: int = 8) -> AffineFit:
    """``scale``, ``shift`` minimising Tukey's biweight loss of ``y − (scale × x + shift)``:
    iteratively reweighted least squares from a median/MAD start, the residual scale re-estimated
    (MAD) at each step. Samples that disagree (moving objects, outliers) end with weight 0."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    mx, my = _median(x), _median(y)
    sx, sy = _median(np.abs(x - mx)), _median(np.abs(y - my))
    scale = sy / sx if sx > 0 else 1.0
    shift = my - scale * mx
    weights = np.ones_like(x)
    for _ in range(iterations):
        residual = y - (scale * x + shift)
        sigma = _MAD_TO_SIGMA * _median(np.abs(residual))
        if not np.isfinite(sigma):
            break
        if sigma <= 1e-12 * max(1.0, float(np.abs(y).max())):
            weights = (np.abs(residual) <= 1e-9 * max(1.0, float(np.abs(y).max()))).astype(float)
            break
        u = residual / (_TUKEY_C * sigma)
        weights = np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)
        total = weights.sum()
        if total <= 0:
            break
        wx, wy = (weights * x).sum() / total, (weights * y).sum() / total
        var = (weights * (x - wx) ** 2).sum()
        if var <= 0:
            break
        new_scale = (weights * (x - wx) * (y - wy)).sum() / var
        new_shift = wy - new_scale * wx
        done = abs(new_scale - scale) <= 1e-7 * abs(scale) and abs(new_shift - shift) <= 1e-7 * (
            abs(shift) + abs(wy) + 1e-12)
        scale, shift = new_scale, new_shift
        if done:
            break
    return AffineFit(float(scale), float(shift), float((weights > 0).mean()))


class TemporalStabiliser:
    """Raw disparity frames in, :class:`StableFrame` out, one at a time in order. Holds only the
    reference (``samples`` points) and the range, whatever the length of the video.

    ``reference_weight``: how much each aligned frame moves the reference (1: the previous frame
    alone; lower: a moving average, steadier, slower to follow the camera). ``range_alpha``: the
    range's moving-average weight per frame (0.05: a time constant of 20 frames).
    """

    def __init__(self, *, samples: int = 4096, reference_weight: float = 0.5,
                 range_alpha: float = 0.05, percentiles: tuple[float, float] = (0.5, 99.5),
                 cut_threshold: float = 0.35, min_inliers: float = 0.3) -> None:
        self.samples, self.reference_weight, self.range_alpha = samples, reference_weight, range_alpha
        self.percentiles, self.min_inliers = percentiles, min_inliers
        self.cuts = ShotCutDetector(cut_threshold)
        self._shape: tuple[int, int] | None = None
        self._grid: tuple[slice, slice] = (slice(None), slice(None))
        self._reference: np.ndarray | None = None
        self._range = (0.0, 0.0)
        self.frames = 0

    def reset(self) -> None:
        self._reference = None

    def _sample_grid(self, shape: tuple[int, int]) -> tuple[slice, slice]:
        h, w = shape
        step = max(1, int(np.sqrt(h * w / self.samples)))
        return slice(step // 2, None, step), slice(step // 2, None, step)

    def push(self, disparity: np.ndarray, rgb: np.ndarray | None = None) -> StableFrame:
        """Stabilise the next frame; ``rgb`` (its colour frame, any size) detects shot cuts."""
        depth = np.asarray(disparity, np.float32)
        if depth.ndim != 2:
            raise ValueError(f"a depth map is 2-D, got shape {depth.shape}")
        if not np.isfinite(depth).all():
            finite = np.isfinite(depth)
            depth = np.where(finite, depth, depth[finite].min() if finite.any() else 0.0)
        cut = rgb is not None and self.cuts.is_cut(rgb)
        if depth.shape != self._shape:
            self._shape, self._grid = depth.shape, self._sample_grid(depth.shape)
            self._reference = None
        sample = depth[self._grid].astype(np.float64).ravel()
        scale, shift = 1.0, 0.0
        if not cut and self._reference is not None:
            fit = robust_affine_fit(sample, self._reference)
            if fit.inliers >= self.min_inliers and np.isfinite([fit.scale, fit.shift]).all() \
                    and fit.scale > 0:
                scale, shift = fit.scale, fit.shift
            else:
                cut = True  # lost track: nothing in this frame agrees with the reference
        reset = cut or self._reference is None
        aligned_sample = scale * sample + shift
        lo, hi = _quantiles(aligned_sample, tuple(p / 100 for p in self.percentiles))
        if reset:
            self._reference = aligned_sample
            self._range = (lo, hi)
        else:
            w = self.reference_weight
            self._reference = (1 - w) * self._reference + w * aligned_sample
            a = self.range_alpha
            old_lo, old_hi = self._range
            self._range = (old_lo + a * (lo - old_lo), old_hi + a * (hi - old_hi))
        range_min, range_max = self._range
        if range_max <= range_min:  # a flat frame: any positive span will do
            range_max = range_min + max(1e-6, abs(range_min) * 1e-6)
            self._range = (range_min, range_max)
        span = range_max - range_min
        # unit = (scale·d + shift − min) / span, in float32 in place: two passes over the frame.
        unit = depth * np.float32(scale / span)
        unit += np.float32((shift - range_min) / span)
        np.clip(unit, 0.0, 1.0, out=unit)
        self.frames += 1
        return StableFrame(unit, float(scale), float(shift), float(range_min), float(range_max),
                           bool(reset))
