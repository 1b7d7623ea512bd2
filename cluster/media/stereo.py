"""Stereo views from one photo and its depth map (numpy and Pillow only, no model, no GPU).

The depth map is depthmill's normalised inverse depth (1 = nearest, 0 = farthest), usually smaller
than the photo. Each view is made in three steps:

1. upsample the depth to the photo's size, then dilate near values by about the upscale factor,
   so the depth edge of a foreground object lies just outside its colour edge: otherwise the
   bicubic ramp gives the object's rim background disparity and it tears away from the object;
2. forward-warp the *disparity* with a z-buffer (the nearer source pixel wins where two land on one
   destination), which says for every destination pixel which source pixel it shows, then sample the
   colour backwards at sub-pixel precision;
3. fill disocclusions (destination pixels nothing landed on) from the background side of the hole,
   mirroring the background next to it: the foreground never smears into the hole and no pixel is
   left black.

Disparity, in pixels, is ``divergence% × width × (inverse_depth − c_level)``: positive (crossed,
out of the screen) for what is nearer than the convergence plane. The left view shifts by +d/2 and
the right by −d/2, so a near object sits further right in the left view than in the right one, as
it does for two eyes.
"""

from __future__ import annotations

import io
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageOps

from cluster.media.decode import to_rgb

Layout = Literal["sbs", "sbs-half", "tb", "tb-half", "crosseye", "anaglyph", "rgbd"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
ImageFormat = Literal["jpeg", "png", "webp"]

DEFAULT_DIVERGENCE = 2.0  # percent of the image width between the nearest and the farthest point
DEFAULT_CONVERGENCE = 0.5  # zero-disparity plane halfway between nearest (0) and farthest (1)
MAX_DIVERGENCE = 10.0

# Dubois's least-squares red-cyan matrices (E. Dubois, "A projection method to generate anaglyph
# stereo images", ICASSP 2001), for linear RGB: rows give the anaglyph's R, G, B from a view's RGB.
DUBOIS_LEFT = np.array([[0.456, 0.500, 0.176],
                        [-0.040, -0.038, -0.016],
                        [-0.015, -0.021, -0.005]], dtype=np.float32)
DUBOIS_RIGHT = np.array([[-0.043, -0.088, -0.002],
                         [0.378, 0.734, -0.018],
                         [-0.072, -0.113, 1.226]], dtype=np.float32)


def upsample_depth(unit: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Depth at ``size`` (width, height): bicubic, clipped to the map's own range, then near values
    dilated by about the upscale factor so foreground edges keep their disparity."""
    unit = np.asarray(unit, dtype=np.float32)
    lo, hi = float(unit.min()), float(unit.max())
    # Bicubic spreads an edge over about two source pixels, one each side: that many destination
    # pixels is how far the near side must grow.
    radius = int(np.clip(np.ceil(size[0] / unit.shape[1]), 1, 8))
    if (unit.shape[1], unit.shape[0]) != tuple(size):
        unit = np.asarray(Image.fromarray(unit, "F").resize(size, Image.Resampling.BICUBIC))
    return _dilate(np.clip(unit, lo, hi), radius)


def _dilate(a: np.ndarray, radius: int) -> np.ndarray:
    """A (2r+1)² max filter as two separable passes of shifted maxima (views, no copies)."""
    h, w = a.shape
    padded = np.pad(a, radius, mode="edge")
    rows = padded[:, radius:radius + w].copy()
    for k in range(2 * radius + 1):
        np.maximum(rows[radius:radius + h], padded[k:k + h, radius:radius + w],
                   out=rows[radius:radius + h])
    rows = rows[radius:radius + h]
    padded = np.pad(rows, ((0, 0), (radius, radius)), mode="edge")
    out = padded[:, radius:radius + w].copy()
    for k in range(2 * radius + 1):
        np.maximum(out, padded[:, k:k + w], out=out)
    return out


def convergence_level(unit: np.ndarray, convergence: float) -> float:
    """The inverse depth of the zero-disparity plane: 0 puts it at the nearest point of the scene
    (everything behind the screen), 1 at the farthest (everything in front)."""
    near, far = float(unit.max()), float(unit.min())
    return near + convergence * (far - near)


def disparity(unit: np.ndarray, divergence: float, convergence: float,
              level: float | None = None) -> np.ndarray:
    """Pixels of horizontal disparity between the two views; positive (crossed) is nearer.
    ``level``: the zero-disparity plane's inverse depth, fixed (the frames of a video share one,
    so the screen does not move with each frame's range); None places it from this map's range."""
    width = unit.shape[1]
    if level is None:
        level = convergence_level(unit, convergence)
    return (divergence / 100.0 * width) * (unit - level)


def _splat_disparity(d: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Forward-warp disparity: each destination pixel gets the largest (nearest) disparity among
    the source pixels landing on it (floor and ceil of the target, so a stretch leaves no
    one-pixel gaps); -inf where nothing lands (a disocclusion). Targets off the frame land in a
    one-pixel margin on each side that is cut off afterwards, so no masking is needed."""
    h, w = d.shape
    target = np.arange(w, dtype=np.float32)[None, :] + shift
    base = (np.arange(h, dtype=np.int32) * (w + 2) + 1)[:, None]
    out = np.full(h * (w + 2), -np.inf, dtype=np.float32)
    flat_d = d.astype(np.float32, copy=False).ravel()
    for rounded in (np.floor(target), np.ceil(target)):
        np.clip(rounded, -1, w, out=rounded)
        np.maximum.at(out, (rounded.astype(np.int32) + base).ravel(), flat_d)
    return out.reshape(h, w + 2)[:, 1:w + 1]


def _nearest_valid(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel, the column of the nearest valid pixel to its left and to its right in its
    row (-1 / width when there is none)."""
    h, w = valid.shape
    cols = np.arange(w, dtype=np.int32)
    left = np.maximum.accumulate(np.where(valid, cols, np.int32(-1)), axis=1)
    right = np.minimum.accumulate(np.where(valid, cols, np.int32(w))[:, ::-1], axis=1)[:, ::-1]
    return left, right


def _source_columns(d_dest: np.ndarray, sign: float) -> np.ndarray:
    """Where each destination pixel samples the source: back along its own disparity, or, in a
    hole, the background next to the hole mirrored away from it."""
    h, w = d_dest.shape
    cols = np.arange(w, dtype=np.float32)
    valid = np.isfinite(d_dest)
    src = cols - np.float32(sign / 2.0) * d_dest
    if valid.all():
        return src
    if not valid.any():
        return np.broadcast_to(cols, (h, w)).copy()
    left, right = _nearest_valid(valid)
    hr, hc = np.nonzero(~valid)  # holes are a small part of a frame: the rest is per hole pixel
    lc, rc = left[hr, hc], right[hr, hc]
    d_left = np.where(lc >= 0, d_dest[hr, np.maximum(lc, 0)], np.inf)
    d_right = np.where(rc < w, d_dest[hr, np.minimum(rc, w - 1)], np.inf)
    use_left = d_left <= d_right  # the farther neighbour is the background
    nb = np.where(use_left, lc, rc).clip(0, w - 1)  # a row with nothing valid: any column
    dist = np.abs(hc - nb).astype(np.float32)
    nb_src = src[hr, nb]
    src[hr, hc] = np.where(use_left, nb_src - dist, nb_src + dist)
    return src


def _sample_rows(rgb: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Linear interpolation along each row at fractional columns (clamped to the image), in
    8-bit fixed point: integer arithmetic on uint16 is several times faster than float32 here,
    and a 1/256-pixel step is far below what a view can show."""
    h, w, _ = rgb.shape
    src = np.clip(src, 0, w - 1)
    x0 = src.astype(np.int32)  # floor: src is not negative
    frac = ((src - x0) * 256).astype(np.uint16)[..., None]
    rows = (np.arange(h, dtype=np.int32) * w)[:, None]
    idx = x0 + rows
    flat = rgb.reshape(-1, 3)
    a = flat.take(idx, axis=0).astype(np.uint16)
    b = flat.take(np.minimum(idx + 1, rows + (w - 1)), axis=0).astype(np.uint16)
    # At most 255 * 256 + 128: uint16 holds it.
    a *= 256 - frac
    b *= frac
    a += b
    a += 128
    a >>= 8
    return a.astype(np.uint8)


def warp_view(rgb: np.ndarray, d: np.ndarray, sign: float) -> np.ndarray:
    """One eye's view: ``sign`` +1 for the left (shift +d/2), -1 for the right (shift -d/2)."""
    d_dest = _splat_disparity(d, sign * d / 2.0)
    return _sample_rows(rgb, _source_columns(d_dest, sign))


def stereo_views(rgb: np.ndarray, unit_depth: np.ndarray, divergence: float = DEFAULT_DIVERGENCE,
                 convergence: float = DEFAULT_CONVERGENCE, level: float | None = None,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The left and right views (H×W×3 uint8) of ``rgb`` given its normalised inverse depth."""
    h, w, _ = rgb.shape
    unit = upsample_depth(unit_depth, (w, h))
    d = disparity(unit, divergence, convergence, level)
    return warp_view(rgb, d, +1.0), warp_view(rgb, d, -1.0)


def _srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    c = np.arange(256, dtype=np.float32) / 255.0
    lut = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
    return lut[rgb]


def _srgb_lut() -> np.ndarray:
    lin = np.linspace(0.0, 1.0, 65536)
    c = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * np.power(lin, 1 / 2.4) - 0.055)
    return np.clip(c * 255.0 + 0.5, 0, 255).astype(np.uint8)


_SRGB = _srgb_lut()  # 16-bit linear → 8-bit sRGB: a table lookup instead of a power per pixel


def _linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    return _SRGB[(np.clip(lin, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)]


def anaglyph(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Red-cyan anaglyph by Dubois's projection, in linear light as the matrices were fitted:
    less retinal rivalry and ghosting than taking R from one view and G, B from the other."""
    lin = _srgb_to_linear(left) @ DUBOIS_LEFT.T + _srgb_to_linear(right) @ DUBOIS_RIGHT.T
    return _linear_to_srgb(lin)


def _squeeze(view: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(view).resize(size, Image.Resampling.LANCZOS))


def depth_gray(unit_depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The depth as 8-bit gray RGB at ``size`` (near = white), for RGB-D viewers."""
    unit = np.asarray(unit_depth, dtype=np.float32)
    if (unit.shape[1], unit.shape[0]) != tuple(size):
        unit = np.asarray(Image.fromarray(unit, "F").resize(size, Image.Resampling.BICUBIC))
    gray = np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def frame_size(layout: Layout, width: int, height: int) -> tuple[int, int]:
    """(width, height) of ``layout``'s frame for a picture of ``width`` × ``height``."""
    if layout in ("sbs", "crosseye", "rgbd"):
        return 2 * width, height
    if layout == "tb":
        return width, 2 * height
    if layout in ("sbs-half", "tb-half", "anaglyph"):
        return width, height
    raise ValueError(f"unknown stereo layout {layout!r}; one of {', '.join(LAYOUTS)}")


def arrange(layout: Layout, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Both views in one frame. Half layouts squeeze each view to half the width (height) so the
    frame keeps the photo's size, as 3D TVs expect."""
    h, w, _ = left.shape
    if layout == "sbs":
        return np.concatenate([left, right], axis=1)
    if layout == "crosseye":
        return np.concatenate([right, left], axis=1)
    if layout == "tb":
        return np.concatenate([left, right], axis=0)
    if layout == "sbs-half":
        return np.concatenate([_squeeze(left, (w // 2, h)), _squeeze(right, (w - w // 2, h))], axis=1)
    if layout == "tb-half":
        return np.concatenate([_squeeze(left, (w, h // 2)), _squeeze(right, (w, h - h // 2))], axis=0)
    if layout == "anaglyph":
        return anaglyph(left, right)
    raise ValueError(f"unknown stereo layout {layout!r}; one of {', '.join(LAYOUTS)}")


def render(rgb: np.ndarray, unit_depth: np.ndarray, layout: Layout = "sbs",
           divergence: float = DEFAULT_DIVERGENCE,
           convergence: float = DEFAULT_CONVERGENCE, level: float | None = None) -> np.ndarray:
    """The frame for ``layout`` (H×W'×3 uint8). ``rgbd`` needs no views: colour beside depth.
    ``level``: see :func:`disparity`."""
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    if layout == "rgbd":
        h, w, _ = rgb.shape
        return np.concatenate([rgb, depth_gray(unit_depth, (w, h))], axis=1)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown stereo layout {layout!r}; one of {', '.join(LAYOUTS)}")
    left, right = stereo_views(rgb, unit_depth, divergence, convergence, level)
    return arrange(layout, left, right)


CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}


def encode_image(frame: np.ndarray, fmt: ImageFormat) -> bytes:
    """The frame as a file; JPEG and WebP at quality 90 (stereo viewers magnify each view)."""
    buf = io.BytesIO()
    img = Image.fromarray(frame, "RGB")
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=90)
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=90, method=4)
    elif fmt == "png":
        img.save(buf, "PNG", compress_level=3)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


def upright_rgb(data: bytes) -> np.ndarray:
    """A stored photo (a preview or an original of any supported type) as an upright H×W×3 uint8
    array, the orientation its depth map was made in."""
    with Image.open(io.BytesIO(data)) as img:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        img.load()
        return np.asarray(to_rgb(ImageOps.exif_transpose(img)))
