"""Exports under real names: a media item's depth outputs and stereo renders as files a person
looks for (``trip/beach.depth.png``, ``trip/beach_SBS.jpg``) rather than the storage's UUID keys.

Pure: no database, no storage backend. The caller hands over the item (its name, the folder it
goes in, its kind), lazy loaders of its stored outputs and a :class:`Target` that files are
written to (:class:`LocalTarget` here; the bulk job has one for S3). Re-running is cheap and
resumes: a render already at the target is skipped without loading the photo (targets write a
file whole or not at all, so one that exists is complete), and a copied output is rewritten
only when its size differs from the stored one (the depth was made again).

Naming: ``<stem>.depth.png`` (16-bit depth), ``<stem>.depth.webp`` (colour preview),
``<stem>_SBS.jpg`` and the other layouts' suffixes (the names 3D players recognise), and for
videos ``<stem>.depth.mp4`` and ``<stem>_SBS.mp4`` (and the other layouts' suffixes: stereo videos
rendered from the 16-bit depth video, with the source's audio). Names that collide in one folder
(``a.jpg`` and ``a.png``, two ``IMG_0001`` from two cameras) keep the plain stem for the first
in the caller's order and get ``_<first 8 hex digits of the media id>`` for the rest; a nameless
item is ``untitled_<id8>``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Protocol

from cluster.media import stereo
from cluster.media.depth_encode import decode_depth_png16
from cluster.media.stereo_video import render_stereo_video

# The suffix each layout's file gets: the ones VR and 3D-TV players detect in a file name.
LAYOUT_SUFFIXES: dict[str, str] = {
    "sbs": "_SBS", "sbs-half": "_HSBS", "tb": "_TB", "tb-half": "_HTB",
    "crosseye": "_CROSS", "anaglyph": "_ANAGLYPH", "rgbd": "_RGBD",
}
assert set(LAYOUT_SUFFIXES) == set(stereo.LAYOUTS)

DEPTH_PNG = ".depth.png"
DEPTH_PREVIEW = ".depth.webp"
DEPTH_VIDEO = ".depth.mp4"

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


def parse_layouts(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"sbs,anaglyph"`` (or a list of such) as layouts in the order given, without repeats;
    ValueError, one sentence naming the valid ones, for anything else."""
    if text is None:
        return ()
    parts = [text] if isinstance(text, str) else list(text)
    wanted = [p.strip().lower() for part in parts for p in part.split(",") if p.strip()]
    unknown = [w for w in wanted if w not in LAYOUT_SUFFIXES]
    if unknown:
        raise ValueError(f"unknown layout {', '.join(map(repr, unknown))}: "
                         f"valid layouts are {', '.join(stereo.LAYOUTS)}")
    return tuple(dict.fromkeys(wanted))


def clean_stem(original_name: str | None) -> str:
    """The file's name without its folder and extension, made safe for any file system and S3
    (no separators or control characters, no leading dots); "" when nothing is left."""
    if not original_name:
        return ""
    name = original_name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:  # no extension (or a dotfile): the whole name is the stem
        stem = name
    stem = _UNSAFE.sub("_", stem).strip().lstrip(".").strip()
    return stem[:200]


def short_id(media_id: uuid.UUID | str) -> str:
    return uuid.UUID(str(media_id)).hex[:8]


def stem_for(original_name: str | None, media_id: uuid.UUID | str, *, disambiguate: bool) -> str:
    stem = clean_stem(original_name)
    if not stem:
        return f"untitled_{short_id(media_id)}"
    return f"{stem}_{short_id(media_id)}" if disambiguate else stem


def plan_stems(items: Iterable[tuple[str, str | None, uuid.UUID | str]]) -> list[str]:
    """Relative stems (``folder/stem``) for ``(folder, original_name, media_id)`` in order: the
    first of a (case-insensitive) name in a folder keeps it, later ones get the id suffix. The
    same media twice under one name is one export."""
    seen: dict[tuple[str, str], str] = {}
    out = []
    for folder, name, media_id in items:
        key = (folder, clean_stem(name).lower())
        first = seen.setdefault(key, str(media_id))
        stem = stem_for(name, media_id, disambiguate=bool(key[1]) and first != str(media_id))
        out.append(str(PurePosixPath(folder) / stem) if folder not in ("", ".") else stem)
    return out


def file_names(stem: str, kind: str, layouts: Sequence[str]) -> dict[str, str]:
    """What an item exports, output → relative path: ``png16``, ``preview``, each layout, and
    ``video`` for a video."""
    if kind == "video":
        return {"video": stem + DEPTH_VIDEO,
                **{layout: stem + LAYOUT_SUFFIXES[layout] + ".mp4" for layout in layouts}}
    return {"png16": stem + DEPTH_PNG, "preview": stem + DEPTH_PREVIEW,
            **{layout: stem + LAYOUT_SUFFIXES[layout] + ".jpg" for layout in layouts}}


class Target(Protocol):
    """Where exports go, by relative path ('/'-separated)."""

    def size(self, path: str) -> int | None:
        """The size of the file at ``path``, None when there is none."""

    def write(self, path: str, data: bytes) -> None:
        """Write the file whole or not at all (a reader never sees half of one)."""

    def write_file(self, path: str, local: Path) -> None:
        """``write`` from a local file (a stereo video: too large to hold in memory)."""

    def describe(self, path: str) -> str:
        """The full location, for people."""


class LocalTarget:
    """A local directory; files go to a temporary file renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, path: str) -> Path:
        rel = PurePosixPath(path)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"export path {path!r} leaves the export directory")
        return self.root.joinpath(*rel.parts)

    def size(self, path: str) -> int | None:
        try:
            return self._path(path).stat().st_size
        except FileNotFoundError:
            return None

    def write(self, path: str, data: bytes) -> None:
        self._write_with(path, lambda f: f.write(data))

    def write_file(self, path: str, local: Path) -> None:
        def copy(f) -> None:
            with Path(local).open("rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
        self._write_with(path, copy)

    def _write_with(self, path: str, fill: Callable) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def describe(self, path: str) -> str:
        return str(self._path(path))


@dataclass
class Sources:
    """Lazy loaders of an item's stored outputs (each called at most once): the 16-bit depth
    PNG, the colour preview, the depth video, and the photo to render from (the original, or
    the preview when the original cannot be had or decoded: ``fallback_photo``); for a video's
    stereo renders, ``video_files`` copies the original and its 16-bit depth video into a
    directory and gives their paths."""

    depth_png: Callable[[], bytes] | None = None
    depth_preview: Callable[[], bytes] | None = None
    depth_video: Callable[[], bytes] | None = None
    photo: Callable[[], bytes] | None = None
    fallback_photo: Callable[[], bytes] | None = None
    video_files: Callable[[Path], tuple[Path, Path]] | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def load(self, name: str) -> bytes:
        if name not in self._cache:
            loader = getattr(self, name)
            if loader is None:
                raise LookupError(f"no stored {name.replace('_', ' ')}")
            self._cache[name] = loader()
        return self._cache[name]

    @cached_property
    def unit_depth(self):
        return decode_depth_png16(self.load("depth_png"))

    @cached_property
    def rgb(self):
        """The photo upright, the original's size when it decodes, else the preview's."""
        if self.photo is not None:
            try:
                return stereo.upright_rgb(self.load("photo"))
            except Exception:
                if self.fallback_photo is None:
                    raise
        if self.fallback_photo is None:
            raise LookupError("no stored photo to render from")
        return stereo.upright_rgb(self.load("fallback_photo"))


@dataclass(frozen=True)
class Exported:
    output: str  # png16, preview, video or a layout
    path: str  # relative to the target
    written: bool  # False: already there
    bytes: int


def export_item(stem: str, kind: str, sources: Sources, layouts: Sequence[str], target: Target,
                *, divergence: float = stereo.DEFAULT_DIVERGENCE,
                convergence: float = stereo.DEFAULT_CONVERGENCE) -> list[Exported]:
    """Write one item's exports under ``stem`` (a relative path without suffix); what was
    written and what was there already. Raises what a loader or a render raises."""
    done = []
    copies = {"png16": "depth_png", "preview": "depth_preview", "video": "depth_video"}
    for output, path in file_names(stem, kind, layouts).items():
        existing = target.size(path)
        if output in copies:
            data = sources.load(copies[output])
            if existing == len(data):
                done.append(Exported(output, path, False, existing))
                continue
        elif existing:  # a render, written whole: done
            done.append(Exported(output, path, False, existing))
            continue
        elif kind == "video":
            done.append(_export_stereo_video(path, output, sources, target, divergence,
                                             convergence))
            continue
        else:
            frame = stereo.render(sources.rgb, sources.unit_depth, output, divergence, convergence)
            data = stereo.encode_image(frame, "jpeg")
        target.write(path, data)
        done.append(Exported(output, path, True, len(data)))
    return done


def _export_stereo_video(path: str, layout: str, sources: Sources, target: Target,
                         divergence: float, convergence: float) -> Exported:
    if sources.video_files is None:
        raise LookupError("no stored 16-bit depth video (and original) to render the stereo "
                          "video from: reprocess the video to make one")
    with tempfile.TemporaryDirectory(prefix="depthmill-export-") as tmp:
        source, depth16 = sources.video_files(Path(tmp))
        out = Path(tmp) / "stereo.mp4"
        render_stereo_video(source, depth16, out, layout,  # type: ignore[arg-type]
                            divergence=divergence, convergence=convergence)
        target.write_file(path, out)
        return Exported(layout, path, True, out.stat().st_size)


def shorten_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, the middle replaced by an ellipsis (a path's
    start and its file name are what tell files apart)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    tail = (width - 1) // 2 + (width - 1) % 2
    head = width - 1 - tail
    return text[:head] + "…" + text[-tail:]
