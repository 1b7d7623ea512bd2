"""Exports of stored items (``cluster.media.exports``) fed from storage: which stored object is
each output, loaded only when the export needs it. Shared by ``depthmill process --out`` and the
bulk export job."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from cluster.media.exports import Exported, Sources, Target, export_item
from cluster.storage import Storage, download
from cluster.storage import keys as storage_keys
from db.depth import DepthMap

# The depth_maps formats an export reads.
FORMATS = ("png16", "preview", "video", "video16")


def depth_keys(maps: Sequence[DepthMap], model_id: str) -> dict[str, str]:
    """format → storage key of the model's outputs among ``maps``."""
    return {m.format: m.storage_key for m in maps if m.model_id == model_id and m.format in FORMATS}


def sources_for(storage: Storage, media_id: uuid.UUID | str, original_key: str | None,
                keys: dict[str, str]) -> Sources:
    """Loaders of a media item's outputs: the original to render from, its gallery preview
    when the original cannot be decoded."""
    media_id = uuid.UUID(str(media_id))

    def loader(key: str | None):
        return None if key is None else (lambda: storage.get_bytes(key))

    def video_files(directory: Path) -> tuple[Path, Path]:
        return (download(storage, original_key, directory / "source"),
                download(storage, keys["video16"], directory / "depth16.mkv"))

    return Sources(
        depth_png=loader(keys.get("png16")), depth_preview=loader(keys.get("preview")),
        depth_video=loader(keys.get("video")), photo=loader(original_key),
        fallback_photo=loader(storage_keys.preview(media_id)),
        video_files=video_files if original_key and "video16" in keys else None,
    )


def export_stored(storage: Storage, target: Target, *, stem: str, kind: str,
                  media_id: uuid.UUID | str, original_key: str | None, keys: dict[str, str],
                  layouts: Sequence[str]) -> list[Exported]:
    if kind == "video" and "video" not in keys:
        raise LookupError("no depth video stored for this video")
    if kind == "photo" and "png16" not in keys:
        raise LookupError("no depth map stored for this photo")
    return export_item(stem, kind, sources_for(storage, media_id, original_key, keys), layouts,
                       target)
