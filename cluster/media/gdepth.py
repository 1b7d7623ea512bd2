"""Depth inside a JPEG as Google's depth-map XMP (GDepth, the "Lens Blur" format), which photo
viewers, 3D-photo tools and VR galleries read without a second file.

The depth image is an 8-bit PNG of the photo's size in ``GDepth:Format="RangeInverse"``: a pixel
stores ``(1/d − 1/Far) / (1/Near − 1/Far)`` quantised to 0–255, so 255 is the near end. That
quantity *is* a normalised inverse depth, which is what depthmill stores (Depth Anything predicts
relative inverse depth; the 16-bit PNG keeps it normalised to [0, 1], near = 1). A relative model
has no metres, so Near and Far are nominal: ``NEAR = 1`` and ``FAR = 100`` (units of the scene's
nearest point). With them a reader that converts back gets ``1/d = 1/Far + u·(1/Near − 1/Far)``,
an inverse depth affine in the model's output, as the model's own is, and the stored byte is
exactly ``round(u × 255)`` for any choice of Near < Far, so nothing is lost to the choice.

The base64 PNG does not fit one 64 KB APP1 segment, so it goes into extended XMP (XMP
specification part 3, 1.1.3.1): the main packet carries the small fields and
``xmpNote:HasExtendedXMP`` with the MD5 of the extended packet; the extended packet is split into
APP1 segments of at most 65400 bytes, each headed by the extension namespace, that MD5, the full
length and the chunk's offset. The XMP is written by hand: it is a few lines, and the Python XMP
libraries wrap C libraries (exiv2, Exempi).
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct

import numpy as np
from PIL import Image

NEAR = 1.0
FAR = 100.0
GDEPTH_NS = "http://ns.google.com/photos/1.0/depthmap/"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
EXTENSION_HEADER = b"http://ns.adobe.com/xmp/extension/\x00"
CHUNK = 65400  # the XMP specification's recommended extended-XMP chunk size
MAX_SEGMENT = 65535 - 2  # an APPn payload: the length field counts itself


def range_inverse_png(unit_depth: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """The depth as an 8-bit RangeInverse PNG: round(u × 255), resized first when ``size``."""
    unit = np.asarray(unit_depth, dtype=np.float32)
    if size is not None and (unit.shape[1], unit.shape[0]) != tuple(size):
        unit = np.asarray(Image.fromarray(unit, "F").resize(size, Image.Resampling.BICUBIC))
    quantised = np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(quantised, "L").save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _main_packet(guid: str) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about=""'
        f' xmlns:GDepth="{GDEPTH_NS}"'
        ' xmlns:xmpNote="http://ns.adobe.com/xmp/note/"'
        ' GDepth:Format="RangeInverse"'
        f' GDepth:Near="{NEAR:g}" GDepth:Far="{FAR:g}"'
        ' GDepth:Mime="image/png" GDepth:MeasureType="OpticalAxis"'
        f' xmpNote:HasExtendedXMP="{guid}"/>'
        "</rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def _extended_packet(depth_png: bytes) -> bytes:
    """No packet wrapper: the specification wants extended XMP as a bare x:xmpmeta."""
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:GDepth="{GDEPTH_NS}"'
        f' GDepth:Data="{base64.b64encode(depth_png).decode()}"/>'
        "</rdf:RDF></x:xmpmeta>"
    ).encode()


def _app1(payload: bytes) -> bytes:
    if len(payload) > MAX_SEGMENT:
        raise ValueError(f"an APP1 segment holds at most {MAX_SEGMENT} bytes, not {len(payload)}")
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def xmp_segments(depth_png: bytes) -> list[bytes]:
    """The APP1 segments: the main XMP packet, then the extended packet in chunks."""
    extended = _extended_packet(depth_png)
    guid = hashlib.md5(extended).hexdigest().upper()
    segments = [_app1(XMP_HEADER + _main_packet(guid))]
    for offset in range(0, len(extended), CHUNK):
        header = EXTENSION_HEADER + guid.encode() + struct.pack(">II", len(extended), offset)
        segments.append(_app1(header + extended[offset:offset + CHUNK]))
    return segments


def _insertion_point(jpeg: bytes) -> int:
    """After SOI and the JFIF/EXIF segments that must come first; any other APPn stays after."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    pos = 2
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF:
        marker = jpeg[pos + 1]
        (length,) = struct.unpack(">H", jpeg[pos + 2:pos + 4])
        body = jpeg[pos + 4:pos + 2 + length]
        if marker == 0xE0 or (marker == 0xE1 and body.startswith(b"Exif\x00")):
            pos += 2 + length
            continue
        break
    return pos


def _without_xmp(jpeg: bytes) -> bytes:
    """The JPEG with any XMP APP1 segments (main or extended) before the image data dropped, so
    embedding twice leaves one depth map, not two."""
    out, pos = [jpeg[:2]], 2
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF and jpeg[pos + 1] not in (0xDA, 0xD9):
        (length,) = struct.unpack(">H", jpeg[pos + 2:pos + 4])
        segment = jpeg[pos:pos + 2 + length]
        body = segment[4:]
        if not (jpeg[pos + 1] == 0xE1 and body.startswith((XMP_HEADER, EXTENSION_HEADER))):
            out.append(segment)
        pos += 2 + length
    out.append(jpeg[pos:])
    return b"".join(out)


def embed(jpeg: bytes, unit_depth: np.ndarray) -> bytes:
    """``jpeg`` with its depth embedded as GDepth XMP; the image data is not re-encoded. The depth
    is resized to the JPEG's size, as viewers expect."""
    with Image.open(io.BytesIO(jpeg)) as img:
        size = img.size
    jpeg = _without_xmp(jpeg)
    at = _insertion_point(jpeg)
    return jpeg[:at] + b"".join(xmp_segments(range_inverse_png(unit_depth, size))) + jpeg[at:]


def to_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """A plain JPEG of an RGB array, for when the photo at hand is not one already."""
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()
