"""Photos from their encoded bytes to depth and gallery renditions, inside the depth replica.

On a GPU the processing tasks send a photo's bytes rather than its pixels, and the replica does
the work that would otherwise hold the GPU back on the host: JPEGs are decoded in batches by
nvJPEG (``torchvision.io.decode_jpeg(device="cuda")``), turned upright there, reduced for the
model, and the preview is resized and JPEG-encoded on the GPU too. What nvJPEG does not take
(other formats, CMYK JPEGs, a decoder error) and every photo where torchvision or CUDA is absent
is decoded by Pillow, as the tasks do, and goes on through the same tensor code. The caller
still encodes the depth PNG, its colour WebP and the WebP thumbnail on its own CPU cores.

torchvision is optional (the ``gpu`` extra) and imported only here, when a GPU is in use.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cluster.media.decode import (
    MODEL_SHORT_SIDE,
    PREVIEW_SIZE,
    THUMBNAIL_SIZE,
    decode_upright,
    exif_orientation,
)
from cluster.model.contract import DepthResult, PhotoDepth
from cluster.model.core import DepthEstimator

log = logging.getLogger(__name__)

# nvJPEG's encoder writes baseline 4:4:4 JPEGs, Pillow's (the tasks' previews) progressive
# 4:2:0 ones: at the same quality a GPU-made preview is somewhat larger.
PREVIEW_QUALITY = 85
JPEG_FORMATS = ("JPEG", "MPO")  # MPO: a JPEG with more images after it (phones' gain maps)


@cache
def torchvision_io():
    """torchvision.io, or None where it is not installed or does not import (PyPI's torchvision
    fails to import beside a CPU-only torch build)."""
    try:
        import torchvision.io
    except Exception as e:  # noqa: BLE001 - ImportError, or its operators failing to register
        log.info("torchvision unavailable (%s): photos decode with Pillow", e)
        return None
    return torchvision.io


@cache
def gpu_codec_available(device: torch.device) -> bool:
    """Whether JPEGs decode (and previews encode) on ``device`` itself: torchvision imports,
    and a small JPEG decodes and encodes there (torchvision can import with its image operators
    missing, or built without nvJPEG)."""
    if device.type != "cuda" or (tvio := torchvision_io()) is None:
        return False
    probe = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 140, 200)).save(probe, "JPEG")
    try:
        (pixels,) = _nvjpeg_batch(tvio, [probe.getvalue()], device)
        tvio.encode_jpeg([pixels], quality=PREVIEW_QUALITY)
    except Exception as e:  # noqa: BLE001 - whatever a broken install raises
        log.warning("nvJPEG does not work on %s (%s): photos sent to the depth replica are "
                    "decoded by Pillow on its CPUs", device, e)
        return False
    return True


# ------------------------------------------------------------------------------------ decoding


@dataclass
class _Header:
    orientation: int
    nvjpeg: bool  # a whole JPEG nvJPEG can take (RGB or grayscale, not CMYK)


def _header(content: bytes) -> _Header:
    with Image.open(io.BytesIO(content)) as img:
        return _Header(exif_orientation(img), img.format in JPEG_FORMATS
                       and img.mode in ("RGB", "L") and _ends_its_scans(content))


def _ends_its_scans(content: bytes) -> bool:
    """Whether an end-of-image marker follows the last start of scan. nvJPEG can fill what a
    truncated JPEG lacks with grey where Pillow refuses it, so one that may be cut short goes to
    Pillow. (Entropy-coded data never holds FF D9; data appended after the image, a motion
    photo's video, may make a whole JPEG look cut short, and Pillow then decodes it.)"""
    return content.rfind(b"\xff\xd9") > content.rfind(b"\xff\xda")


def orient(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """A 3×H×W tensor turned upright for its EXIF orientation (1–8), as Pillow's exif_transpose
    turns an image: nvJPEG decodes the stored pixels and leaves orientation to the caller."""
    if orientation == 2:
        return pixels.flip(-1)
    if orientation == 3:
        return pixels.flip(-1, -2)
    if orientation == 4:
        return pixels.flip(-2)
    if orientation == 5:
        return pixels.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(pixels, -1, (-2, -1))
    if orientation == 7:
        return pixels.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return torch.rot90(pixels, 1, (-2, -1))
    return pixels


def _pillow_decode(content: bytes, device: torch.device) -> torch.Tensor:
    """Upright RGB as a 3×H×W uint8 tensor on ``device``, decoded as the tasks decode (a JPEG
    at the reduced DCT scale the preview still fits in)."""
    upright = np.array(decode_upright(content, PREVIEW_SIZE))
    return torch.from_numpy(upright).permute(2, 0, 1).to(device)


@dataclass
class Decoded:
    pixels: torch.Tensor  # 3×H×W uint8 on the model's device, upright
    decoder: str  # "nvjpeg" or "pillow"


def decode_photos(contents: Sequence[bytes], device: torch.device) -> list[Decoded | str]:
    """Each photo upright on ``device``, or why it could not be decoded. JPEGs nvJPEG takes go
    to it in one batch where the GPU codec is available; the rest to Pillow."""
    out: list[Decoded | str | None] = [None] * len(contents)
    headers: list[_Header | None] = []
    for i, content in enumerate(contents):
        try:
            headers.append(_header(content))
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
            headers.append(None)
            out[i] = f"cannot decode the photo: {e}"
    if gpu_codec_available(device):
        on_gpu = [i for i, h in enumerate(headers) if h is not None and h.nvjpeg]
        for i, pixels in zip(on_gpu, _nvjpeg([contents[i] for i in on_gpu], device)):
            if pixels is not None:
                out[i] = Decoded(orient(pixels, headers[i].orientation), "nvjpeg")
    for i, content in enumerate(contents):
        if out[i] is None:
            try:
                out[i] = Decoded(_pillow_decode(content, device), "pillow")
            except Exception as e:  # noqa: BLE001 - truncated, unsupported, corrupt
                out[i] = f"cannot decode the photo: {e}"
    return out  # type: ignore[return-value]


def _nvjpeg(contents: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """nvJPEG decodes of ``contents``, one batch; None where a photo must go to Pillow."""
    if not contents:
        return []
    tvio = torchvision_io()
    try:
        return _nvjpeg_batch(tvio, contents, device)
    except Exception as e:  # noqa: BLE001 - RuntimeError for a bad photo; no partial results
        log.info("batched nvJPEG decode failed (%s); decoding one by one", e)
    out: list[torch.Tensor | None] = []
    for content in contents:
        try:
            out.extend(_nvjpeg_batch(tvio, [content], device))
        except Exception:  # noqa: BLE001
            out.append(None)
    return out


_decode_lock = threading.Lock()
_decode_streams: dict[torch.device, torch.cuda.Stream] = {}


def _nvjpeg_batch(tvio, contents: list[bytes], device: torch.device) -> list[torch.Tensor]:
    """One ``decode_jpeg`` call on a stream of its own. nvJPEG writes its outputs from a stream
    that does not wait for the one they were allocated on: allocated on the stream the model
    runs on, a decode could be handed memory a batch running in the replica's other thread has
    just freed while that batch's kernels still read it. On a stream only decodes use, one at a
    time, every earlier decode has finished (the call waits for its own work); the outputs are
    then marked as used on the caller's stream, so their memory is not reused before it is done.
    """
    data = [torch.frombuffer(bytearray(c), dtype=torch.uint8) for c in contents]
    with _decode_lock:
        stream = _decode_streams.setdefault(device, torch.cuda.Stream(device))
        with torch.cuda.stream(stream):
            decoded = list(tvio.decode_jpeg(data, mode=tvio.ImageReadMode.RGB, device=device))
        stream.synchronize()
    caller = torch.cuda.current_stream(device)
    for pixels in decoded:
        pixels.record_stream(caller)
    return decoded


# ----------------------------------------------------------------------------------- geometry


def fit_within(height: int, width: int, box: int) -> tuple[int, int]:
    """The size Pillow's ``thumbnail((box, box))`` gives (the same rounding): the aspect kept,
    never enlarged."""
    if height <= box and width <= box:
        return height, width
    aspect = width / height
    if aspect <= 1:
        return box, _round_aspect(box * aspect, key=lambda n: abs(aspect - n / box))
    return _round_aspect(box / aspect, key=lambda n: 0 if n == 0 else abs(aspect - box / n)), box


def _round_aspect(number: float, key) -> int:
    return max(min(math.floor(number), math.ceil(number), key=key), 1)


def model_input(pixels: torch.Tensor, short_side: int = MODEL_SHORT_SIDE) -> torch.Tensor:
    """The photo reduced by the largest whole factor that keeps its short side at least
    ``short_side`` (a box average, as Pillow's ``reduce``), so the model's own resize works on
    a few hundred thousand pixels rather than twelve million."""
    factor = max(1, min(pixels.shape[-2:]) // short_side)
    if factor == 1:
        return pixels
    reduced = F.avg_pool2d(pixels[None].float(), factor, ceil_mode=True)
    return reduced[0].round_().clamp_(0, 255).to(torch.uint8)


def resized(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    out = F.interpolate(pixels[None].float(), size=size, mode="bicubic", antialias=True,
                        align_corners=False)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


# -------------------------------------------------------------------------------- the photo path


def depth_for_photos(
    core: DepthEstimator, contents: Sequence[bytes],
    output_sizes: Sequence[tuple[int, int] | None],
) -> list[PhotoDepth]:
    """Depth (at each ``output_sizes`` entry; None: the size of the photo's model input), the
    JPEG preview and the thumbnail's pixels for each photo's encoded bytes. A photo that cannot
    be decoded or prepared fails alone."""
    results: list[PhotoDepth | None] = [None] * len(contents)
    # (index, decoder, model input, preview) of each photo decoded
    prepared: list[tuple[int, str, torch.Tensor, torch.Tensor]] = []
    for i, d in enumerate(decode_photos(contents, core.device)):
        if isinstance(d, str):
            results[i] = PhotoDepth(DepthResult(None, error=d))
            continue
        try:
            preview = resized(d.pixels, fit_within(*d.pixels.shape[-2:], PREVIEW_SIZE))
            prepared.append((i, d.decoder, model_input(d.pixels), preview))
        except Exception as e:  # noqa: BLE001 - out of memory on a huge photo, say
            results[i] = PhotoDepth(DepthResult(
                None, error=f"cannot prepare the photo: {type(e).__name__}: {e}"))
    answers = core.predict([p[2] for p in prepared], [output_sizes[p[0]] for p in prepared])
    previews = [p[3] for p in prepared]
    thumbnails = [resized(p, fit_within(*p.shape[-2:], THUMBNAIL_SIZE)) for p in previews]
    jpegs = encode_jpegs(previews, core.device)
    for (i, decoder, _, _), answer, jpeg, thumbnail in zip(prepared, answers, jpegs, thumbnails):
        results[i] = PhotoDepth(answer, preview_jpeg=jpeg,
                                thumbnail=thumbnail.permute(1, 2, 0).cpu().numpy(),
                                decoder=decoder)
    return results  # type: ignore[return-value]


def encode_jpegs(images: list[torch.Tensor], device: torch.device) -> list[bytes]:
    """JPEGs of 3×H×W uint8 tensors: nvJPEG's encoder where the GPU codec is available, else
    Pillow (optimised and progressive, as the tasks' previews)."""
    if images and gpu_codec_available(device):
        tvio = torchvision_io()
        try:
            encoded = tvio.encode_jpeg(images, quality=PREVIEW_QUALITY)
            return [bytes(t.cpu().numpy()) for t in encoded]
        except Exception as e:  # noqa: BLE001 - fall back rather than fail the batch
            log.info("GPU JPEG encode failed (%s); encoding with Pillow", e)
    out = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(
            buf, "JPEG", quality=PREVIEW_QUALITY, optimize=True, progressive=True)
        out.append(buf.getvalue())
    return out

