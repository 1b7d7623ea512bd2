"""Where each object lives. Keys are built from ids and content hashes only, never from user file
names, so no upload can traverse paths or overwrite another's objects."""

from __future__ import annotations

import re
import uuid

_SAFE_MODEL = re.compile(r"[^A-Za-z0-9._-]+")


ORIGINALS = "originals/"


def original(sha256: str, extension: str) -> str:
    # Content-addressed: the same bytes always land on the same key (uploads dedupe on sha256).
    return f"{ORIGINALS}{sha256[:2]}/{sha256}{extension}"


def content_addressed(key: str) -> bool:
    """Whether the key names its content (an original: its sha256), so what it holds never
    changes. Every other key is rewritten in place when its media is processed again."""
    return key.startswith(ORIGINALS)


def thumbnail(media_id: uuid.UUID) -> str:
    return f"thumbnails/{media_id}.webp"


def preview(media_id: uuid.UUID) -> str:
    return f"previews/{media_id}.jpg"


def model_slug(model_id: str) -> str:
    return _SAFE_MODEL.sub("_", model_id).strip("_.") or "model"


_DEPTH_SUFFIXES = {"png16": ".png", "preview": ".webp", "video": ".mp4", "video16": ".mkv",
                   "frames": ".json"}


def depth(media_id: uuid.UUID, model_id: str, fmt: str) -> str:
    """``fmt``: png16 (depth data), preview (colour WebP), video (8-bit H.264 depth video, for
    browsers), video16 (lossless 16-bit FFV1 depth video), frames (a video's per-frame scale,
    shift and range, JSON; no row of its own: the video rows name it, and it goes with them)."""
    return f"depth/{model_slug(model_id)}/{media_id}/{fmt}{_DEPTH_SUFFIXES[fmt]}"


def written_by_processing(media_id: uuid.UUID, model_id: str) -> list[str]:
    """Every object processing an item can write: renditions and the depth outputs."""
    return [thumbnail(media_id), preview(media_id),
            *(depth(media_id, model_id, fmt) for fmt in _DEPTH_SUFFIXES)]


RENDERS = "renders/"


def quantised_stereo(divergence: float, convergence: float) -> tuple[float, float]:
    """Stereo parameters on the cache's grid (divergence to 0.1 %, convergence to 0.05): requests
    that differ by less than anyone can see share one render."""
    return round(round(divergence * 10) / 10, 1), round(round(convergence * 20) / 20, 2)


def renders_of(media_id: uuid.UUID) -> str:
    """The prefix of every render made from a media's depth (deleted with the media)."""
    return f"{RENDERS}{media_id}/"


def stereo_render(media_id: uuid.UUID, model_id: str, layout: str, divergence: float,
                  convergence: float, size: str, extension: str) -> str:
    """A cached stereo render; the parameters are quantised here, so the key is the cache's."""
    div, conv = quantised_stereo(divergence, convergence)
    return (f"{renders_of(media_id)}{model_slug(model_id)}/"
            f"{layout}_d{div:.1f}_c{conv:.2f}_{size}.{extension}")


def stereo_video_render(media_id: uuid.UUID, model_id: str, layout: str, divergence: float,
                        convergence: float, codec: str, name: str) -> str:
    """A stereo video render, its file name ending as the layout's players look for
    (``name``: e.g. ``beach_SBS.mp4``)."""
    div, conv = quantised_stereo(divergence, convergence)
    return (f"{renders_of(media_id)}{model_slug(model_id)}/"
            f"{layout}_d{div:.1f}_c{conv:.2f}_{codec}_{name}")


def gdepth_render(media_id: uuid.UUID, model_id: str, size: str) -> str:
    """A cached JPEG with the depth embedded as GDepth XMP."""
    return f"{renders_of(media_id)}{model_slug(model_id)}/gdepth_{size}.jpg"


_OF_MEDIA = re.compile(
    r"(?:thumbnails/(?P<t>[0-9a-f-]{36})\.webp|previews/(?P<p>[0-9a-f-]{36})\.jpg"
    r"|depth/[^/]+/(?P<d>[0-9a-f-]{36})/[^/]+"
    r"|renders/(?P<r>[0-9a-f-]{36})/[^/]+/[^/]+)"
)


def media_of(key: str) -> uuid.UUID | None:
    """The media a rendition, depth output or render belongs to; None for any other key."""
    if not (m := _OF_MEDIA.fullmatch(key)):
        return None
    try:
        return uuid.UUID(m["t"] or m["p"] or m["d"] or m["r"])
    except ValueError:
        return None
