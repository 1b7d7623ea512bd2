"""Decoding for the model and for people: model-ready RGB arrays (reduced-size JPEG decode, EXIF
orientation, any mode to RGB), gallery renditions (thumbnail, preview) and sampled video frames."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from PIL import Image, ImageOps


MODEL_SHORT_SIDE = 518
THUMBNAIL_SIZE = 250  # Immich's thumbnail: WebP, 250 px
PREVIEW_SIZE = 1440  # Immich's preview: JPEG, 1440 px

Source = Path | BinaryIO | bytes


def _open(source: Source) -> Image.Image:
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    return Image.open(source)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: CMYK, palette, grayscale, 16-bit and alpha images included."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # PIL clips these to 0–255 when converting; scale the real range down instead.
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent areas become black rather than whatever colour the encoder left there.
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def decode_for_model(source: Source, short_side: int = MODEL_SHORT_SIDE) -> np.ndarray:
    """An H×W×3 uint8 array, upright, whose short side is at least ``short_side`` (or the
    original's, if smaller). JPEGs decode at a reduced DCT scale (1/2, 1/4, 1/8) when that still
    leaves enough pixels: a 12 MP photo decodes at 1/4 in a fraction of the full decode's time.
    The model core does the final resize and normalisation, batched, on its device."""
    with _open(source) as img:
        if img.format == "JPEG":
            w, h = img.size
            scale = short_side / min(w, h)
            if scale < 1:
                img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # GIF and multi-page TIFF: the first frame
        img.load()
        upright = ImageOps.exif_transpose(img)
        return np.asarray(to_rgb(upright))


@dataclass(frozen=True)
class DecodedPhoto:
    """One decode of a photo, feeding both its consumers."""

    model: np.ndarray  # H×W×3 uint8, upright, short side at least the model's (as decode_for_model)
    gallery: Image.Image  # upright RGB at preview size at most, for thumbnail_webp and preview_jpeg
    size: tuple[int, int]  # the photo's own (height, width), upright


EXIF_ORIENTATION = 0x0112
_TURNED = (5, 6, 7, 8)  # the EXIF orientations that swap width and height


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation (1–8) of an opened image; 1, upright, when it has none or a bad one."""
    orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    return orientation if orientation in range(1, 9) else 1


def _upright_size(img: Image.Image) -> tuple[int, int]:
    w, h = img.size
    return (w, h) if exif_orientation(img) in _TURNED else (h, w)


def _decoded_upright(img: Image.Image, box: int) -> Image.Image:
    """An opened image decoded, turned upright and in RGB; a JPEG at the reduced DCT scale that
    still fills ``box`` on both sides; the first frame of a GIF or multi-page TIFF."""
    if img.format == "JPEG":
        img.draft("RGB", (box, box))
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    img.load()
    return to_rgb(ImageOps.exif_transpose(img))


def decode_upright(source: Source, box: int = PREVIEW_SIZE) -> Image.Image:
    """The photo decoded upright in RGB, at no less than ``box`` on both sides where a JPEG's
    reduced DCT scale allows."""
    with _open(source) as img:
        return _decoded_upright(img, box)


def upright_size(source: Source) -> tuple[int, int]:
    """A photo's (height, width) once turned upright, from its header alone (no decode)."""
    with _open(source) as img:
        return _upright_size(img)


def decode_photo(source: Source, short_side: int = MODEL_SHORT_SIDE) -> DecodedPhoto:
    """The model's input and the gallery image from one decode. A JPEG decodes at the reduced
    DCT scale the preview needs (at least PREVIEW_SIZE on both sides, more than the model needs);
    the model's array is that image reduced by the largest whole factor that keeps its short side
    at least ``short_side`` (a 12 MP photo: decoded at 2000×1500, reduced to 1000×750, the size
    decode_for_model's own DCT scale gives). Decoding twice, once per consumer, cost a second
    entropy decode of every photo."""
    with _open(source) as img:
        size = _upright_size(img)
        upright = _decoded_upright(img, PREVIEW_SIZE)
    factor = max(1, min(upright.size) // short_side)
    model = np.asarray(upright.reduce(factor) if factor > 1 else upright)  # a copy of the pixels
    upright.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE), Image.Resampling.LANCZOS)
    return DecodedPhoto(model, upright, size)


def _rendition(source: Source, size: int) -> Image.Image:
    with _open(source) as img:
        out = _decoded_upright(img, size)
    out.thumbnail((size, size), Image.Resampling.LANCZOS)
    return out


def gallery_image(source: Source) -> Image.Image:
    """The photo upright and in RGB at preview size: one decode for both renditions."""
    return _rendition(source, PREVIEW_SIZE)


def thumbnail_webp(source: Source | Image.Image) -> bytes:
    img = source if isinstance(source, Image.Image) else _rendition(source, THUMBNAIL_SIZE)
    img = img.copy()
    img.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "WEBP", quality=80, method=4)
    return buf.getvalue()


def preview_jpeg(source: Source | Image.Image) -> bytes:
    img = source if isinstance(source, Image.Image) else _rendition(source, PREVIEW_SIZE)
    img = img.copy()
    img.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85, optimize=True, progressive=True)
    return buf.getvalue()


@dataclass(frozen=True)
class VideoFrame:
    index: int  # position among the frames taken
    timestamp: float  # seconds from the start of the video
    rgb: np.ndarray  # H×W×3 uint8 (reduced when ``short_side`` asked for it)
    source_size: tuple[int, int] = (0, 0)  # the video's own height, width


def sample_video_frames(
    source: Path | BinaryIO, *, fps: float | None = 2.0, max_frames: int | None = 600,
    short_side: int | None = None,
) -> Iterator[VideoFrame]:
    """Frames at most ``fps`` a second (None: every frame), at most ``max_frames`` (None: no
    cap), streamed: one decoded frame in memory at a time. Above ``fps`` frames are dropped
    evenly by timestamp (a 50 fps video at 30 keeps 3 frames in 5). ``short_side``: frames larger
    than that are scaled down (keeping at least that short side) while they are converted to RGB,
    which is nearly free there and saves copying full-size frames to the model."""
    interval = 1.0 / fps if fps else 0.0
    next_time = 0.0
    count = 0
    with av.open(source if not isinstance(source, Path) else str(source)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            if interval and frame.time + 1e-6 < next_time:
                continue
            size = (frame.height, frame.width)
            yield VideoFrame(count, float(frame.time), _rgb(frame, short_side), size)
            count += 1
            if max_frames is not None and count >= max_frames:
                return
            if interval:
                # Skip ahead by whole intervals so a gap in the stream does not cause a burst.
                next_time += interval * max(1, math.floor((frame.time - next_time) / interval) + 1)


def _rgb(frame: av.VideoFrame, short_side: int | None) -> np.ndarray:
    h, w = frame.height, frame.width
    if short_side is None or min(h, w) <= short_side:
        return frame.to_ndarray(format="rgb24")
    scale = short_side / min(h, w)
    return frame.to_ndarray(format="rgb24", width=max(short_side, round(w * scale)),
                            height=max(short_side, round(h * scale)), interpolation="AREA")


def video_frame_rate(source: Path | BinaryIO) -> float | None:
    """The video's average frame rate as its container states it, if it does."""
    with av.open(source if not isinstance(source, Path) else str(source)) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else None


def poster_frame(source: Path | BinaryIO) -> Image.Image:
    """The first frame of a video, for its thumbnail and preview."""
    frame = next(sample_video_frames(source, fps=1.0, max_frames=1))
    return Image.fromarray(frame.rgb)
