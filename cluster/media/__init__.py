"""Media: what a file is (probe), decoding and renditions (decode), depth encodings."""

from __future__ import annotations


def configure_pillow() -> None:
    """Pillow's process-wide set-up, called by each entry point that reads media (the gateway, a
    processing task, the CLI, the bulk jobs' stages) rather than at import. Idempotent."""
    import pillow_heif
    from PIL import Image, ImageFile

    pillow_heif.register_heif_opener()
    # Decode bombs are caught by our own pixel check (from the header, before decoding); PIL's
    # global guard would only duplicate it with a less helpful message.
    Image.MAX_IMAGE_PIXELS = None
    # A truncated file must fail, not decode into grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
