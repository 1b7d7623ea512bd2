"""Real test media: scikit-image's sample photos in every format we accept, videos encoded with
PyAV, and a corpus of hostile files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pillow_heif
from PIL import Image
from skimage import data as samples

pillow_heif.register_heif_opener()


def photo(name: str = "astronaut") -> Image.Image:
    return Image.fromarray(getattr(samples, name)()).convert("RGB")


def large_photo(width: int = 4000, height: int = 3000) -> Image.Image:
    """A 12 MP photo with real texture: the coffee sample tiled and scaled up."""
    return photo("coffee").resize((width, height), Image.Resampling.BICUBIC)


def jpeg_bytes(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def encoded(img: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def exif_jpeg(img: Image.Image, orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    exif.get_ifd(0x8769)[0x9003] = "2024:07:14 18:30:05"
    return jpeg_bytes(img, exif=exif.tobytes())


def with_comment(jpeg: bytes, comment: bytes) -> bytes:
    """The JPEG with a comment segment (COM) right after its start marker."""
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def photo_variants() -> dict[str, bytes]:
    """name → bytes of every photo format and awkward mode we promise to read."""
    rgb = photo("astronaut")
    gray16 = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
    rgba = rgb.copy()
    rgba.putalpha(128)
    gif = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    return {
        "rgb.jpg": jpeg_bytes(rgb),
        "rotated.jpg": exif_jpeg(photo("chelsea"), 6),
        "cmyk.jpg": jpeg_bytes(rgb.convert("CMYK")),
        "gray.jpg": jpeg_bytes(rgb.convert("L")),
        "progressive.jpg": jpeg_bytes(rgb, progressive=True),
        # A phone's motion photo: the JPEG, then a video appended after its end marker.
        "motion.jpg": jpeg_bytes(rgb) + video_bytes(seconds=1),
        "gray16.png": encoded(gray16, "PNG"),
        "rgba.png": encoded(rgba, "PNG"),
        "photo.webp": encoded(rgb, "WEBP", quality=90),
        "photo.heic": encoded(rgb, "HEIF", quality=90),
        "photo.tiff": encoded(rgb, "TIFF"),
        "anim.gif": encoded(gif, "GIF", save_all=True, append_images=[gif.rotate(90)]),
    }


def video_bytes(
    fmt: str = "mp4", codec: str = "libx264", *, seconds: float = 2.0, fps: int = 10,
    size: tuple[int, int] = (160, 120), audio: str | None = None,
) -> bytes:
    """A real encoded video: a moving gradient, so frames differ; with ``audio`` (a codec, e.g.
    "aac" or "pcm_s16le"), a 440 Hz tone as long as the video."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        sound = out.add_stream(audio, rate=44100) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for i in range(round(seconds * fps)):
            x = np.linspace(0, 255, size[0], dtype=np.float32)
            frame = np.broadcast_to(((x + i * 10) % 256)[None, :, None], (size[1], size[0], 3))
            vf = av.VideoFrame.from_ndarray(frame.astype(np.uint8).copy(), format="rgb24")
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if sound is not None:
            t = np.arange(round(seconds * 44100)) / 44100
            tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
            for start in range(0, len(tone), 1024):
                af = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="s16",
                                                layout="mono")
                af.sample_rate = 44100
                for packet in sound.encode(af):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return buf.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width × height pixels (an all-zero image compresses to
    almost nothing); only the first rows are present."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 16, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def zip_bytes() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("payload.txt", "not a photo")
    return buf.getvalue()


def bad_files() -> dict[str, tuple[bytes, str]]:
    """name → (bytes, the rejection code each must get)."""
    good_jpeg = jpeg_bytes(photo("astronaut"))
    good_png = encoded(photo("astronaut"), "PNG")
    corrupt_png = bytearray(good_png)
    middle = len(corrupt_png) // 2
    corrupt_png[middle : middle + 64] = bytes(64)
    return {
        "empty.jpg": (b"", "empty_file"),
        "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "corrupt_file"),
        "no-end-marker.jpg": (good_jpeg[:-2], "corrupt_file"),
        "broken-marker.jpg": (good_jpeg[: len(good_jpeg) // 2] + b"\xff\x02" * 100
                              + good_jpeg[len(good_jpeg) // 2 + 200 :], "corrupt_file"),
        # The thumbnail (here in a comment segment, as EXIF carries one) is a whole JPEG with its
        # own end marker; the image after it is cut off.
        "truncated-with-thumbnail.jpg": (with_comment(good_jpeg, jpeg_bytes(photo("astronaut")
                                         .resize((64, 64))))[:-len(good_jpeg) // 3], "corrupt_file"),
        "corrupt.png": (bytes(corrupt_png), "corrupt_file"),
        "polyglot.jpg": (good_jpeg + zip_bytes(), "polyglot_file"),
        "bomb.png": (png_bomb(), "image_too_large"),
        "document.jpg": (b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n", "unsupported_media_type"),
        "text.png": (b"hello, I am not an image\n" * 10, "unsupported_media_type"),
        "truncated.mp4": (video_bytes()[:3000], "corrupt_file"),
    }


def write(tmp: Path, name: str, content: bytes) -> Path:
    path = tmp / name
    path.write_bytes(content)
    return path




def jpeg_to_image(content: bytes) -> Image.Image:
    """A full-resolution decode, as a naive pipeline does it."""
    return Image.open(io.BytesIO(content)).convert("RGB")
