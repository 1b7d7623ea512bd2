"""Stereo rendering on a scene whose depth is known: a textured far plane with a textured near
rectangle in front of it. Shifts are measured by block matching against the source."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cluster.media import stereo

H, W = 120, 400
# The near rectangle, in image pixels (the depth map is half the size, so these are even).
TOP, BOTTOM, LEFT, RIGHT = 40, 80, 120, 220


def scene() -> tuple[np.ndarray, np.ndarray]:
    """Photo and half-resolution depth. The background's colours (G ≥ 100, R < 100) never occur
    in the foreground's (R ≥ 200, G < 50), so a pixel tells which plane it came from."""
    rng = np.random.default_rng(7)
    rgb = np.empty((H, W, 3), dtype=np.uint8)
    rgb[..., 0] = rng.integers(0, 100, (H, W))
    rgb[..., 1] = rng.integers(100, 256, (H, W))
    rgb[..., 2] = rng.integers(1, 256, (H, W))
    fg = (slice(TOP, BOTTOM), slice(LEFT, RIGHT))
    rgb[fg + (0,)] = rng.integers(200, 256, (BOTTOM - TOP, RIGHT - LEFT))
    rgb[fg + (1,)] = rng.integers(0, 50, (BOTTOM - TOP, RIGHT - LEFT))
    depth = np.zeros((H // 2, W // 2), dtype=np.float32)
    depth[TOP // 2:BOTTOM // 2, LEFT // 2:RIGHT // 2] = 1.0
    return rgb, depth


def is_background(px: np.ndarray) -> np.ndarray:
    return (px[..., 1] >= 90) & (px[..., 0] <= 110)


def measured_shift(view: np.ndarray, src: np.ndarray, rows: slice, cols: slice,
                   search: int = 25) -> int:
    """The horizontal shift of a source block in ``view`` that matches it best (least squares)."""
    block = src[rows, cols].astype(np.float32)
    best, best_err = 0, np.inf
    for s in range(-search, search + 1):
        moved = view[rows, cols.start + s:cols.stop + s].astype(np.float32)
        err = float(((moved - block) ** 2).mean())
        if err < best_err:
            best, best_err = s, err
    return best


BG_BLOCK = (slice(0, 30), slice(60, 340))  # above the rectangle
FG_BLOCK = (slice(TOP + 5, BOTTOM - 5), slice(LEFT + 20, RIGHT - 20))  # inside it


def expected_disparity(unit: float, divergence: float, convergence: float) -> float:
    c_level = 1.0 - convergence  # nearest is 1, farthest 0 in this scene
    return divergence / 100 * W * (unit - c_level)


@pytest.mark.parametrize("divergence, convergence", [(5.0, 0.5), (2.0, 0.5), (5.0, 0.0), (4.0, 1.0), (3.0, 0.25)])
def test_each_plane_shifts_by_its_disparity(divergence, convergence):
    rgb, depth = scene()
    left, right = stereo.stereo_views(rgb, depth, divergence, convergence)
    for block, unit in ((BG_BLOCK, 0.0), (FG_BLOCK, 1.0)):
        d = expected_disparity(unit, divergence, convergence)
        shift_l, shift_r = measured_shift(left, rgb, *block), measured_shift(right, rgb, *block)
        assert abs(shift_l - d / 2) <= 1 and abs(shift_r + d / 2) <= 1, (unit, shift_l, shift_r, d)
        assert abs((shift_l - shift_r) - d) <= 1  # between the views: the full disparity


def test_near_objects_have_crossed_disparity():
    rgb, depth = scene()
    left, right = stereo.stereo_views(rgb, depth, 5.0, 0.5)
    # The near rectangle sits further right in the left eye's view than in the right eye's.
    assert measured_shift(left, rgb, *FG_BLOCK) > measured_shift(right, rgb, *FG_BLOCK)
    assert measured_shift(left, rgb, *BG_BLOCK) < measured_shift(right, rgb, *BG_BLOCK)


def test_at_convergence_one_half_the_views_mirror_each_other():
    rgb, depth = scene()
    left, right = stereo.stereo_views(rgb, depth, 5.0, 0.5)
    for block in (BG_BLOCK, FG_BLOCK):
        shift_l, shift_r = measured_shift(left, rgb, *block), measured_shift(right, rgb, *block)
        assert shift_l == -shift_r and shift_l != 0


def test_disocclusions_are_filled_with_background_not_black_or_foreground():
    rgb, depth = scene()
    assert not (rgb.sum(axis=2) == 0).any()
    left, right = stereo.stereo_views(rgb, depth, 5.0, 0.5)  # ±5 px per view, 10 px holes
    for view in (left, right):
        assert not (view.sum(axis=2) == 0).any()
    rows = slice(TOP + 2, BOTTOM - 2)
    # Left view: background moved 5 px left, the rectangle 5 px right; between them was hidden.
    hole_left = left[rows, LEFT - 5 + 1:LEFT + 5 - 1]
    hole_right = right[rows, RIGHT - 5 + 1:RIGHT + 5 - 1]
    assert is_background(hole_left).all() and is_background(hole_right).all()
    # ... and the rectangle itself is intact past its edge (no background torn into it).
    assert not is_background(left[rows, LEFT + 5 + 1:RIGHT + 5 - 1]).any()
    assert not is_background(right[rows, LEFT - 5 + 1:RIGHT - 5 - 1]).any()


def test_frame_borders_are_filled_too():
    rgb, depth = scene()
    left, right = stereo.stereo_views(rgb, depth, 8.0, 1.0)  # the background moves 16 px
    for view in (left, right):
        assert not (view.sum(axis=2) == 0).any()
        assert is_background(view[:TOP - 2]).all()


@pytest.mark.parametrize("layout, size", [
    ("sbs", (2 * W, H)), ("sbs-half", (W, H)), ("tb", (W, 2 * H)), ("tb-half", (W, H)),
    ("crosseye", (2 * W, H)), ("anaglyph", (W, H)), ("rgbd", (2 * W, H)),
])
def test_each_layout_has_its_size(layout, size):
    rgb, depth = scene()
    frame = stereo.render(rgb, depth, layout)
    assert (frame.shape[1], frame.shape[0]) == size and frame.dtype == np.uint8
    assert frame.shape[2] == 3


def test_layouts_put_each_view_in_its_place():
    rgb, depth = scene()
    left, right = stereo.stereo_views(rgb, depth)
    sbs = stereo.render(rgb, depth, "sbs")
    assert np.array_equal(sbs[:, :W], left) and np.array_equal(sbs[:, W:], right)
    cross = stereo.render(rgb, depth, "crosseye")
    assert np.array_equal(cross[:, :W], right) and np.array_equal(cross[:, W:], left)
    tb = stereo.render(rgb, depth, "tb")
    assert np.array_equal(tb[:H], left) and np.array_equal(tb[H:], right)
    half = stereo.render(rgb, depth, "sbs-half")
    squeezed_left = np.asarray(Image.fromarray(left).resize((W // 2, H), Image.Resampling.LANCZOS))
    assert np.abs(half[:, :W // 2].astype(int) - squeezed_left).max() <= 1
    tbh = stereo.render(rgb, depth, "tb-half")
    squeezed_right = np.asarray(Image.fromarray(right).resize((W, H // 2), Image.Resampling.LANCZOS))
    assert np.abs(tbh[H // 2:].astype(int) - squeezed_right).max() <= 1


def test_rgbd_is_colour_beside_eight_bit_depth():
    rgb, depth = scene()
    frame = stereo.render(rgb, depth, "rgbd")
    assert np.array_equal(frame[:, :W], rgb)
    gray = frame[:, W:]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert (gray[TOP + 4:BOTTOM - 4, LEFT + 4:RIGHT - 4] == 255).all()  # near is white
    assert (gray[:TOP - 4] == 0).all()


def _linear(c: np.ndarray) -> np.ndarray:
    c = c / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _srgb(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0, 1)
    return np.round(255 * np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055))


DUBOIS_L = np.array([[0.456, 0.500, 0.176], [-0.040, -0.038, -0.016], [-0.015, -0.021, -0.005]])
DUBOIS_R = np.array([[-0.043, -0.088, -0.002], [0.378, 0.734, -0.018], [-0.072, -0.113, 1.226]])


@pytest.mark.parametrize("left_rgb, right_rgb", [
    ((255, 0, 0), (0, 0, 0)), ((0, 0, 0), (0, 255, 255)), ((200, 120, 40), (30, 90, 220)),
    ((128, 128, 128), (128, 128, 128)),
])
def test_anaglyph_is_dubois_red_cyan(left_rgb, right_rgb):
    left = np.full((4, 4, 3), left_rgb, dtype=np.uint8)
    right = np.full((4, 4, 3), right_rgb, dtype=np.uint8)
    got = stereo.anaglyph(left, right)
    want = _srgb(DUBOIS_L @ _linear(np.array(left_rgb)) + DUBOIS_R @ _linear(np.array(right_rgb)))
    assert np.abs(got.astype(int) - want).max() <= 1, (got[0, 0], want)


def test_anaglyph_takes_red_from_the_left_and_cyan_from_the_right():
    red, cyan, black = (255, 0, 0), (0, 255, 255), (0, 0, 0)
    px = lambda c: np.full((2, 2, 3), c, dtype=np.uint8)  # noqa: E731
    from_left = stereo.anaglyph(px(red), px(black))[0, 0]
    from_right = stereo.anaglyph(px(black), px(cyan))[0, 0]
    assert from_left[0] > 150 and from_left[1] == 0 and from_left[2] == 0
    assert from_right[0] == 0 and from_right[1] > 150 and from_right[2] > 150


@pytest.mark.parametrize("fmt, pil_format", [("jpeg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
def test_frames_encode_in_each_format(fmt, pil_format):
    rgb, depth = scene()
    data = stereo.encode_image(stereo.render(rgb, depth, "sbs-half"), fmt)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == pil_format and img.size == (W, H)


def test_an_unknown_layout_is_refused():
    rgb, depth = scene()
    with pytest.raises(ValueError, match="layout"):
        stereo.render(rgb, depth, "hologram")  # type: ignore[arg-type]
