"""The photo path the depth replica runs on photos sent as their bytes (cluster.model.photos), on
the CPU: Pillow decodes there, and every tensor step after the decode is the one a GPU runs.
nvJPEG itself needs CUDA and torchvision; its routing is checked with a stand-in that decodes as
nvJPEG does (the stored pixels, orientation left to the caller), and the real decoder runs in
`bench.photo_bench` on a GPU machine."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from cluster.media.decode import PREVIEW_SIZE, THUMBNAIL_SIZE, decode_photo
from cluster.model import photos
from cluster.model.contract import target_size
from cluster.model.core import DepthEstimator
from cluster.model.photos import decode_photos, depth_for_photos, fit_within, model_input, orient
from devkit import media_files

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def core(tmp_path_factory) -> DepthEstimator:
    return DepthEstimator("tiny", cache_dir=tmp_path_factory.mktemp("models"), max_batch_size=4)


def chw(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_exif_orientation_is_turned_upright_as_pillow_turns_it(orientation):
    stored = media_files.photo("chelsea").resize((60, 40))  # not square, not symmetric
    content = media_files.exif_jpeg(stored, orientation)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(content))).convert("RGB")
    turned = orient(chw(Image.open(io.BytesIO(content)).convert("RGB")), orientation)
    assert torch.equal(turned, chw(expected))


@pytest.mark.parametrize("size", [(3000, 4000), (4000, 3000), (1080, 1920), (999, 1441),
                                  (1441, 1441), (100, 5000), (1440, 1000), (200, 300)])
def test_renditions_are_the_sizes_pillow_thumbnails_give(size):
    h, w = size
    for box in (PREVIEW_SIZE, THUMBNAIL_SIZE):
        img = Image.new("RGB", (w, h))
        img.thumbnail((box, box))
        assert fit_within(h, w, box) == (img.height, img.width)


def test_the_model_input_is_reduced_by_a_whole_factor_keeping_its_short_side():
    pixels = torch.randint(0, 256, (3, 3000, 4000), dtype=torch.uint8)
    reduced = model_input(pixels)
    assert reduced.shape == (3, 600, 800) and reduced.dtype == torch.uint8  # 3000 // 518 = 5
    expected = pixels[:, :5, :5].float().mean(dim=(1, 2)).round().to(torch.uint8)
    assert torch.equal(reduced[:, 0, 0], expected)  # a box average, as Pillow's reduce
    small = torch.zeros((3, 400, 600), dtype=torch.uint8)
    assert model_input(small) is small


def test_photos_of_every_format_decode_upright_and_bad_ones_fail_alone():
    variants = media_files.photo_variants()
    names = list(variants)
    decoded = decode_photos([variants[n] for n in names] + [b"not a photo"], CPU)
    assert isinstance(decoded[-1], str) and decoded[-1].startswith("cannot decode the photo")
    for name, d in zip(names, decoded):
        assert not isinstance(d, str), f"{name}: {d}"
        assert d.decoder == "pillow" and d.pixels.dtype == torch.uint8 and d.pixels.shape[0] == 3
        ours = decode_photo(variants[name])  # the tasks' decode: the same upright photo
        assert fit_within(*d.pixels.shape[1:], PREVIEW_SIZE) == (ours.gallery.height,
                                                                  ours.gallery.width), name
    rotated = decoded[names.index("rotated.jpg")]
    chelsea = media_files.photo("chelsea")
    assert tuple(rotated.pixels.shape[1:]) == (chelsea.width, chelsea.height)  # turned


def test_depth_and_renditions_come_from_the_bytes(core):
    big = media_files.jpeg_bytes(media_files.large_photo(2000, 1500))
    rotated = media_files.exif_jpeg(media_files.photo("chelsea"), 6)  # 451×300 stored, turned
    png = media_files.encoded(media_files.photo("coffee"), "PNG")
    sizes = [target_size(1500, 2000), (451, 300), None]
    answers = depth_for_photos(core, [big, rotated, b"\xff\xd8\xff broken", png], sizes[:2] +
                               [None] + sizes[2:])
    bad = answers[2]
    assert not bad.depth.ok and bad.depth.error.startswith("cannot decode the photo")
    assert bad.preview_jpeg is None and bad.thumbnail is None
    for answer, size, stored in zip([answers[0], answers[1], answers[3]],
                                    [sizes[0], (451, 300), (400, 600)], [(1500, 2000), (451, 300),
                                                                         (400, 600)]):
        assert answer.depth.ok, answer.depth.error
        assert answer.decoder == "pillow"
        assert answer.depth.depth.shape == (size if size else target_size(*stored))
        preview = Image.open(io.BytesIO(answer.preview_jpeg))
        assert preview.format == "JPEG"
        assert (preview.height, preview.width) == fit_within(*stored, PREVIEW_SIZE)
        assert answer.thumbnail.dtype == np.uint8
        assert answer.thumbnail.shape == (*fit_within(*stored, THUMBNAIL_SIZE), 3)


def test_the_depth_matches_the_tasks_decode_of_the_same_photo(core):
    """Bytes decoded in the replica and pixels decoded by a task give the same depth map (the
    two reductions differ by a pixel's rounding, not in content)."""
    content = media_files.jpeg_bytes(media_files.large_photo(2000, 1500))
    size = target_size(1500, 2000)
    (from_bytes,) = depth_for_photos(core, [content], [size])
    (from_pixels,) = core.predict([decode_photo(content).model], [size])
    a, b = from_bytes.depth.depth.ravel(), from_pixels.depth.ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.99
    assert np.abs(a - b).mean() < 0.05 * (b.max() - b.min())


class NvjpegStandIn:
    """Decodes as nvJPEG does, on the CPU: the stored pixels (no EXIF orientation), RGB out, a
    batch failing as a whole when it refuses one of its photos. It refuses JPEGs carrying the
    comment REFUSED (nvJPEG refuses some JPEGs Pillow reads: arithmetic coding, say)."""

    REFUSED = b"nvjpeg refuses this one"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.encoded = 0

    def decode_batch(self, tvio, contents: list[bytes], device) -> list[torch.Tensor]:
        assert tvio is self and device == CPU
        self.batches.append(len(contents))
        if any(self.REFUSED in c for c in contents):
            raise RuntimeError("Error while decoding JPEG images")
        return [chw(Image.open(io.BytesIO(c)).convert("RGB")) for c in contents]

    def encode_jpeg(self, images, quality):
        self.encoded += len(images)
        return [torch.frombuffer(bytearray(media_files.jpeg_bytes(
            Image.fromarray(i.permute(1, 2, 0).numpy()))), dtype=torch.uint8) for i in images]


@pytest.fixture
def nvjpeg(monkeypatch) -> NvjpegStandIn:
    stand_in = NvjpegStandIn()
    monkeypatch.setattr(photos, "torchvision_io", lambda: stand_in)
    monkeypatch.setattr(photos, "gpu_codec_available", lambda device: True)
    monkeypatch.setattr(photos, "_nvjpeg_batch", stand_in.decode_batch)
    return stand_in


def test_jpegs_go_to_the_gpu_decoder_in_one_batch_and_are_turned_upright(nvjpeg, core):
    variants = media_files.photo_variants()
    names = ["rgb.jpg", "rotated.jpg", "gray.jpg", "cmyk.jpg", "photo.heic", "rgba.png",
             "motion.jpg"]
    decoded = decode_photos([variants[n] for n in names], CPU)
    # The RGB and grayscale JPEGs, the motion photo's too (a whole JPEG, a video after it); CMYK
    # and the other formats go to Pillow.
    assert nvjpeg.batches == [4]
    assert [d.decoder for d in decoded] == ["nvjpeg"] * 3 + ["pillow"] * 3 + ["nvjpeg"]
    rotated = decoded[1].pixels
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(variants["rotated.jpg"])))
    assert torch.equal(rotated, chw(upright.convert("RGB")))
    (answer,) = depth_for_photos(core, [variants["rgb.jpg"]], [None])
    assert answer.decoder == "nvjpeg" and nvjpeg.encoded == 1
    assert Image.open(io.BytesIO(answer.preview_jpeg)).format == "JPEG"


def test_a_photo_the_gpu_decoder_refuses_falls_back_to_pillow_alone(nvjpeg):
    good = media_files.jpeg_bytes(media_files.photo("astronaut"))
    refused = media_files.with_comment(good, NvjpegStandIn.REFUSED)
    decoded = decode_photos([good, refused, good], CPU)
    assert nvjpeg.batches == [3, 1, 1, 1]  # the batch failed as one; then each alone
    assert [d.decoder for d in decoded] == ["nvjpeg", "pillow", "nvjpeg"]
    assert torch.equal(decoded[1].pixels, decoded[0].pixels)


def test_a_jpeg_cut_short_never_reaches_the_gpu_decoder(nvjpeg):
    """nvJPEG can fill a truncated JPEG's missing rows with grey; Pillow refuses it."""
    good = media_files.jpeg_bytes(media_files.photo("astronaut"), progressive=True)
    truncated = good[: len(good) * 2 // 3]
    decoded = decode_photos([good, truncated], CPU)
    assert nvjpeg.batches == [1]
    assert decoded[0].decoder == "nvjpeg"
    assert isinstance(decoded[1], str) and decoded[1].startswith("cannot decode the photo")
