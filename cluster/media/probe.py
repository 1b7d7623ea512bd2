"""What a file really is: its type from content (never the name or the client's Content-Type),
whether it is safe and whole, and its metadata. Anything else is a :class:`MediaRejected` with a
message a person can act on."""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import ExifTags, Image

Kind = Literal["photo", "video"]

PHOTO_FORMATS = {
    "JPEG": ("image/jpeg", ".jpg"),
    "PNG": ("image/png", ".png"),
    "WEBP": ("image/webp", ".webp"),
    "HEIF": ("image/heic", ".heic"),
    "TIFF": ("image/tiff", ".tiff"),
    "GIF": ("image/gif", ".gif"),
}
VIDEO_CONTAINERS = {
    "mp4": ("video/mp4", ".mp4"),
    "mov": ("video/quicktime", ".mov"),
    "matroska": ("video/x-matroska", ".mkv"),
    "webm": ("video/webm", ".webm"),
}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif"}
_QUICKTIME_BRANDS = {b"qt  "}


class MediaRejected(ValueError):
    """The file cannot be accepted. ``code`` is stable for API clients; the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int
    max_pixels: int
    max_video_seconds: float

    @classmethod
    def from_settings(cls, settings) -> MediaLimits:
        return cls(
            max_bytes=int(settings.max_file_size),
            max_pixels=settings.max_image_pixels,
            max_video_seconds=settings.max_video_seconds,
        )


@dataclass(frozen=True)
class ProbedMedia:
    kind: Kind
    format: str  # JPEG, PNG, … for photos; mp4, mov, matroska, webm for videos
    mime: str
    extension: str
    bytes: int
    width: int  # as displayed, after EXIF orientation
    height: int
    taken_at: datetime | None = None
    camera: str | None = None
    duration: float | None = None
    fps: float | None = None
    frame_count: int | None = None
    codec: str | None = None


def sniff(head: bytes) -> tuple[Kind, str] | None:
    """The container from its first bytes; None when it is nothing we read."""
    if head.startswith(b"\xff\xd8\xff"):
        return "photo", "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "photo", "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "photo", "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "photo", "WEBP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "photo", "TIFF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "photo", "HEIF"
        return "video", "mov" if brand in _QUICKTIME_BRANDS else "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "webm" if b"webm" in head[:64] else "matroska"
    return None


def probe(path: Path, limits: MediaLimits) -> ProbedMedia:
    """Validate ``path`` completely and describe it, or raise MediaRejected."""
    size = path.stat().st_size
    if size == 0:
        raise MediaRejected("empty_file", "the file is empty (0 bytes)")
    if size > limits.max_bytes:
        raise MediaRejected(
            "file_too_large", f"the file is {size} bytes; the limit is {limits.max_bytes} bytes"
        )
    with path.open("rb") as f:
        head = f.read(64)
    found = sniff(head)
    if found is None:
        raise MediaRejected(
            "unsupported_media_type",
            "unsupported media type: photos may be JPEG, PNG, WebP, HEIC/HEIF, TIFF or GIF; "
            "videos MP4, MOV, MKV or WebM",
        )
    # A file that is also a ZIP archive (its central directory sits at the end) is a polyglot:
    # readers disagree on what it is, which is how such files smuggle content past filters.
    if zipfile.is_zipfile(path):
        raise MediaRejected(
            "polyglot_file", "the file is both an image or video and a ZIP archive; refused"
        )
    kind, fmt = found
    if kind == "photo":
        return _probe_photo(path, fmt, size, limits)
    return _probe_video(path, fmt, size, limits)


def _probe_photo(path: Path, fmt: str, size: int, limits: MediaLimits) -> ProbedMedia:
    mime, extension = PHOTO_FORMATS[fmt]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                width, height = img.size
                if width * height > limits.max_pixels:
                    raise MediaRejected(
                        "image_too_large",
                        f"the image is {width}×{height} = {width * height} pixels; "
                        f"the limit is {limits.max_pixels}",
                    )
                exif = img.getexif()
                # Truncated and corrupt files fail here, not later in a worker: decode every
                # pixel once, unless a JPEG shows by its structure that it arrived whole.
                if img.format != "JPEG" or not jpeg_is_whole(path):
                    if img.format == "JPEG":  # DCT scaling: cheaper, and just as strict
                        img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                    img.load()
    except MediaRejected:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise MediaRejected(
            "corrupt_file", f"the {fmt} image is truncated or corrupt ({e})"
        ) from None
    if exif.get(ExifTags.Base.Orientation) in (5, 6, 7, 8):
        width, height = height, width
    return ProbedMedia(
        kind="photo", format=fmt, mime=mime, extension=extension, bytes=size,
        width=width, height=height, taken_at=_taken_at(exif), camera=_camera(exif),
    )


_JPEG_SOS = 0xDA
_JPEG_EOI = 0xD9
# Markers that stand alone, without a length: TEM, RST0-7, SOI.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD9)}
# Inside scan data 0xFF is followed only by 00 (a stuffed byte), FF (fill), RSTn, or the segments
# that may sit between the scans of a progressive JPEG (DHT, DAC, SOS, DQT, DRI, APPn, COM):
# True for the bytes that may not follow it.
_JPEG_BAD_IN_SCAN = np.ones(256, dtype=bool)
_JPEG_BAD_IN_SCAN[[0x00, 0xFF, *range(0xD0, 0xD8), 0xC4, 0xCC, 0xDA, 0xDB, 0xDD, 0xD9,
                   *range(0xE0, 0xF0), 0xFE]] = False


def jpeg_is_whole(path: Path) -> bool:
    """Whether the JPEG's scan data runs to the end-of-image marker with only legal markers on
    the way: the cheap test (about 1 ms for a 2 MB photo, against 20 for a decode) that a file
    arrived whole. A file that passes cannot fail the decode for truncation or a broken marker,
    the errors libjpeg raises; one that fails is decoded to decide. The end marker is looked for
    after the first scan header, not anywhere: the EXIF thumbnail is a whole JPEG of its own,
    and bytes may follow the image (a phone's motion-photo video)."""
    data = path.read_bytes()
    scan = _jpeg_scan_start(data)
    if scan is None:
        return False
    # Vectorised: what follows each 0xFF of the scan data, up to the first end marker. (A regex
    # and bytes.find over the same 2 MB took 15 ms: entropy-coded data is full of 0xFF 00.)
    octets = np.frombuffer(data, dtype=np.uint8)
    marks = np.flatnonzero(octets[scan:-1] == 0xFF) + scan
    following = octets[marks + 1]
    ends = np.flatnonzero(following == _JPEG_EOI)
    return len(ends) > 0 and not _JPEG_BAD_IN_SCAN[following[:ends[0]]].any()


def _jpeg_scan_start(data: bytes) -> int | None:
    """Where the first scan's entropy-coded data begins, walking the segments from SOI."""
    pos = 2  # after SOI, which sniff() has seen
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _JPEG_STANDALONE:
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
            if marker == _JPEG_SOS:
                return pos
    return None


def _taken_at(exif: Image.Exif) -> datetime | None:
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    raw = ifd.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # cameras write all sorts of junk here; a missing date is not an error


def _camera(exif: Image.Exif) -> str | None:
    make = str(exif.get(ExifTags.Base.Make, "")).strip("\x00 ")
    model = str(exif.get(ExifTags.Base.Model, "")).strip("\x00 ")
    if model.startswith(make):
        make = ""
    camera = f"{make} {model}".strip()
    return camera[:200] or None


def _probe_video(path: Path, fmt: str, size: int, limits: MediaLimits) -> ProbedMedia:
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                if container.streams.audio:
                    raise MediaRejected("unsupported_media_type", "audio-only files are not media we can process")
                raise MediaRejected(
                    "corrupt_file", "no readable video stream: the file is truncated or corrupt"
                )
            stream = container.streams.video[0]
            duration = _duration(container, stream)
            if duration is not None and duration > limits.max_video_seconds:
                raise MediaRejected(
                    "video_too_long",
                    f"the video is {duration:.0f} s long; the limit is "
                    f"{limits.max_video_seconds:.0f} s",
                )
            fps = float(stream.average_rate) if stream.average_rate else None
            codec = stream.codec_context.name
            first = next(container.decode(stream), None)
            if first is None:
                raise MediaRejected("corrupt_file", "the video has no decodable frame")
            width, height = first.width, first.height
    except MediaRejected:
        raise
    except (av.FFmpegError, OSError, ValueError, StopIteration) as e:
        raise MediaRejected("corrupt_file", f"the video is truncated or corrupt ({e})") from None
    if width * height > limits.max_pixels:
        raise MediaRejected("image_too_large", f"the video frames are {width}×{height}")
    mime, extension = VIDEO_CONTAINERS[fmt]
    frames = stream.frames or (round(duration * fps) if duration and fps else None)
    return ProbedMedia(
        kind="video", format=fmt, mime=mime, extension=extension, bytes=size,
        width=width, height=height, duration=duration, fps=fps, frame_count=frames, codec=codec,
    )


def _duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(Fraction(container.duration, av.time_base))
    return None
