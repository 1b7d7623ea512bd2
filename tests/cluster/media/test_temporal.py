"""The temporal stabiliser on synthetic sequences: a static textured background, a moving object,
each frame's raw disparity under its own random scale and shift (what a monocular model does)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from cluster.media.temporal import (
    ShotCutDetector,
    TemporalStabiliser,
    flicker,
    per_frame_unit,
    raw_from_unit,
    robust_affine_fit,
)

H, W = 72, 96


def background(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    smooth = 1.0 + 0.4 * (y / H) + 0.2 * np.sin(x / 7.0) * np.cos(y / 5.0)
    return (smooth + 0.1 * rng.random((H, W))).astype(np.float32)  # about 1 to 2


def colour(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    noise = rng.integers(-20, 20, (H, W, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def sequence(frames: int = 60, seed: int = 1, scene: int = 0):
    """(raw disparity, rgb, true disparity) per frame; the object (disparity 3) slides along a
    strip; the model's answer is s·true + c plus noise and a few hot pixels."""
    rng = np.random.default_rng(seed)
    bg, rgb_bg = background(scene), colour(100 + scene)
    for t in range(frames):
        true = bg.copy()
        rgb = rgb_bg.copy()
        xs = slice(4 + t % 70, 20 + t % 70)
        true[20:40, xs] = 3.0
        rgb[20:40, xs] = (250, 30, 30)
        s, c = rng.uniform(0.5, 2.0), rng.uniform(-1.0, 1.0)
        raw = s * true + c + rng.normal(0, 0.001, (H, W)).astype(np.float32)
        hot = rng.integers(0, H * W, 4)
        raw.ravel()[hot] = s * rng.uniform(2.0, 9.0, 4) + c  # spurious peaks
        yield raw.astype(np.float32), rgb, true


def background_mask() -> np.ndarray:
    mask = np.ones((H, W), bool)
    mask[18:42, :] = False  # the object's strip
    return mask


def mean_flicker(units, mask) -> float:
    return float(np.mean([flicker(a, b, mask) for a, b in zip(units, units[1:])]))


def test_robust_fit_recovers_scale_and_shift_despite_outliers():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 5, 4000)
    y = 2.5 * x - 1.5 + rng.normal(0, 0.01, x.size)
    moving = rng.random(x.size) < 0.3
    y[moving] = rng.uniform(-20, 40, moving.sum())
    fit = robust_affine_fit(x, y)
    assert fit.scale == pytest.approx(2.5, rel=2e-3)
    assert fit.shift == pytest.approx(-1.5, abs=1e-2)
    assert 0.6 < fit.inliers < 0.8


def test_the_stabilised_background_flickers_a_third_as_much_as_per_frame_normalisation():
    stabiliser = TemporalStabiliser()
    stable, per_frame = [], []
    for raw, rgb, _ in sequence():
        frame = stabiliser.push(raw, rgb)
        stable.append(frame.unit)
        per_frame.append(per_frame_unit(raw))
    mask = background_mask()
    assert mean_flicker(stable, mask) <= mean_flicker(per_frame, mask) / 3
    assert not any(f.cut for f in [stabiliser.push(raw, rgb) for raw, rgb, _ in sequence(5, 7)])


def test_raw_values_are_recovered_from_the_stored_uint16_and_the_frame_record():
    stabiliser = TemporalStabiliser()
    for raw, rgb, _ in sequence(12):
        frame = stabiliser.push(raw, rgb)
        rec = frame.record()
        restored = raw_from_unit(frame.quantised(), rec["scale"], rec["shift"], rec["range_min"],
                                 rec["range_max"])
        inside = (frame.unit > 0) & (frame.unit < 1)
        assert inside.mean() > 0.95  # only the tails beyond the range are clipped
        step = (rec["range_max"] - rec["range_min"]) / 65535 / rec["scale"]
        assert np.abs(restored - raw)[inside].max() <= step * 0.51 + 1e-5


def test_a_hard_cut_resets_the_reference_and_nothing_else_does():
    stabiliser = TemporalStabiliser()
    first = [stabiliser.push(raw, rgb) for raw, rgb, _ in sequence(20, seed=2, scene=0)]
    second = [stabiliser.push(raw, rgb) for raw, rgb, _ in sequence(20, seed=3, scene=1)]
    assert [f.cut for f in first] == [True] + [False] * 19
    assert [f.cut for f in second] == [True] + [False] * 19
    assert (second[0].scale, second[0].shift) == (1.0, 0.0)
    # The new shot is stable in its own right after the reset.
    assert mean_flicker([f.unit for f in second], background_mask()) < 0.02


def test_shot_cut_detector_ignores_motion_and_sees_new_scenes():
    detector = ShotCutDetector()
    cuts = [detector.is_cut(rgb) for _, rgb, _ in sequence(30, scene=0)]
    cuts += [detector.is_cut(rgb) for _, rgb, _ in sequence(3, scene=5)]
    assert cuts == [False] * 30 + [True, False, False]


def test_memory_stays_flat_over_a_long_stream():
    rng = np.random.default_rng(0)
    bg = background()[:24, :32]  # small frames: thousands of them in a few seconds
    rgb = colour(0)[:24, :32]

    def run(frames: int) -> int:
        stabiliser = TemporalStabiliser()
        tracemalloc.start()
        try:
            for _ in range(frames):
                stabiliser.push(rng.uniform(0.5, 2) * bg + rng.uniform(-1, 1), rgb)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = run(100), run(2000)
    assert long < short * 1.25 + 64 * 1024
