"""The depth-model core with the `tiny` model (random weights built from config, saved with
save_pretrained and loaded back through the real loading path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cluster.model.contract import target_size
from cluster.model.core import DepthEstimator, ModelLoadError, tiny_model_dir
from cluster.media.decode import decode_for_model
from devkit import media_files


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def model(cache_dir) -> DepthEstimator:
    return DepthEstimator("tiny", cache_dir=cache_dir, max_batch_size=4)


def photos() -> list[np.ndarray]:
    return [np.asarray(media_files.photo(name)) for name in ("astronaut", "chelsea", "coffee")]


def test_tiny_is_saved_and_loaded_through_the_real_path(cache_dir, model):
    directory = tiny_model_dir(cache_dir)
    assert (directory / "config.json").exists() and (directory / "preprocessor_config.json").exists()
    assert model.info.model_id == "tiny" and model.info.source == "random weights"
    assert model.info.real_estimate is False
    assert model.info.device == "cpu" and model.info.dtype == "float32"
    # Loading the directory by path is the local-directory path users take; still flagged random.
    by_path = DepthEstimator(str(directory), cache_dir=cache_dir)
    assert by_path.info.source == "random weights" and by_path.info.parameters == model.info.parameters
    # Unset, the batch is one image on a CPU (batches cost more per image there); set, it holds.
    assert by_path.max_batch_size == 1 and model.max_batch_size == 4
    image = photos()[1]
    np.testing.assert_allclose(by_path.predict([image])[0].depth, model.predict([image])[0].depth,
                               rtol=1e-5, atol=1e-5)


def test_unknown_models_fail_to_load_with_a_clear_error(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not load depth model 'no-such/model'"):
        DepthEstimator("no-such/model", cache_dir=cache_dir)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ModelLoadError):
        DepthEstimator(str(tmp_path), cache_dir=cache_dir)


@pytest.mark.parametrize(
    "hw,expected", [((750, 1000), (518, 686)), ((3000, 4000), (518, 686)), ((1000, 750), (686, 518)),
                    ((518, 518), (518, 518)), ((300, 451), (350, 518))],
)
def test_target_size_keeps_aspect_and_multiples_of_14(hw, expected):
    assert target_size(*hw) == expected
    assert all(side % 14 == 0 for side in target_size(*hw))


def test_output_matches_input_size_or_the_requested_size(model):
    images = photos()
    results = model.predict(images, [None, (64, 96), None])
    assert [r.depth.shape for r in results] == [images[0].shape[:2], (64, 96), images[2].shape[:2]]
    for r in results:
        assert r.ok and r.depth.dtype == np.float32
        assert r.raw_min == pytest.approx(float(r.depth.min()))
        assert r.raw_max == pytest.approx(float(r.depth.max()))


def test_images_of_equal_shape_share_one_forward(model, monkeypatch):
    calls = []
    original = model.forward

    def counting(**kw):
        calls.append(tuple(kw["pixel_values"].shape))
        return original(**kw)

    monkeypatch.setattr(model, "forward", counting)
    a, b, c = photos()
    model.predict([a, b, a, c, a, b])
    # astronaut ×3 at 518×518; chelsea (300×451) ×2 and coffee (400×600) all map to 350×518:
    # different input shapes, one target shape, one forward pass.
    assert sorted(calls) == [(3, 3, 350, 518), (3, 3, 518, 518)]


def test_batched_results_equal_one_at_a_time(model):
    images = photos() + [photos()[0]]
    together = model.predict(images)
    for image, batched in zip(images, together):
        alone = model.predict([image])[0]
        np.testing.assert_allclose(batched.depth, alone.depth, rtol=1e-4, atol=1e-4)


def test_fast_path_agrees_with_the_transformers_reference_path(cache_dir, model):
    """Reference: AutoImageProcessor + the same weights, one image at a time, full decode."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    directory = tiny_model_dir(cache_dir)
    processor = AutoImageProcessor.from_pretrained(directory, backend="pil")
    reference = AutoModelForDepthEstimation.from_pretrained(directory).eval()
    big = media_files.jpeg_bytes(media_files.large_photo(2000, 1500))
    cases = [(np.asarray(media_files.photo(n)), np.asarray(media_files.photo(n)))
             for n in ("astronaut", "chelsea", "coffee")]
    # The fast path also decodes at reduced size (JPEG draft); the reference decodes fully.
    cases.append((decode_for_model(big), np.asarray(media_files.jpeg_to_image(big))))
    fast = model.predict([fast_input for fast_input, _ in cases],
                         [full.shape[:2] for _, full in cases])
    for (_, full), result in zip(cases, fast):
        with torch.inference_mode():
            inputs = processor(images=full, return_tensors="pt")
            predicted = reference(**inputs).predicted_depth
        expected = processor.post_process_depth_estimation(
            type("Out", (), {"predicted_depth": predicted})(), target_sizes=[full.shape[:2]]
        )[0]["predicted_depth"].numpy()
        r = np.corrcoef(result.depth.ravel(), expected.ravel())[0, 1]
        assert r >= 0.999, f"Pearson r = {r:.5f} for a {full.shape} image"


def test_a_bad_input_fails_alone(model):
    good = photos()[0]
    results = model.predict([good, np.zeros((4, 4), np.uint8), "not an image", good.astype(np.float32), good])
    assert [r.ok for r in results] == [True, False, False, False, True]
    assert "H×W×3" in results[1].error and "str" in results[2].error and "uint8" in results[3].error


def test_an_item_that_breaks_the_forward_pass_fails_alone(model, monkeypatch):
    original = model.forward
    poison = torch.tensor(float("inf"))

    def fragile(**kw):
        if torch.isinf(kw["pixel_values"]).any() or kw["pixel_values"].amax() > 1e3:
            raise RuntimeError("kernel failure")
        return original(**kw)

    monkeypatch.setattr(model, "forward", fragile)
    image = photos()[0]
    bright = image.copy()
    monkeypatch.setattr(model, "_std", model._std.clone())
    # A chunk with one poisoned item: the batch fails, then each item runs alone.
    original_pre = model.preprocess

    def preprocess(images, shape):
        batch = original_pre(images, shape)
        for row, im in enumerate(images):
            if im is bright:
                batch[row] = poison
        return batch

    monkeypatch.setattr(model, "preprocess", preprocess)
    results = model.predict([image, bright, image])
    assert [r.ok for r in results] == [True, False, True]
    assert "kernel failure" in results[1].error


def test_out_of_memory_splits_the_batch(model, monkeypatch):
    original = model.forward
    sizes = []

    def small_gpu(**kw):
        n = kw["pixel_values"].shape[0]
        sizes.append(n)
        if n > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(**kw)

    monkeypatch.setattr(model, "forward", small_gpu)
    image = photos()[0]
    results = model.predict([image] * 4)
    assert all(r.ok for r in results)
    assert sizes == [4, 2, 1, 1, 2, 1, 1]


def test_results_carry_the_revision_the_model_was_loaded_with(cache_dir):
    pinned = DepthEstimator("tiny", revision="abc123", cache_dir=cache_dir)
    (result,) = pinned.predict([photos()[0]])
    assert result.ok and result.revision == pinned.info.revision == "abc123"


def test_a_tiny_variant_is_another_random_model_built_the_same_way(cache_dir, model):
    second = DepthEstimator("tiny:2", cache_dir=cache_dir)
    assert tiny_model_dir(cache_dir, 2) != tiny_model_dir(cache_dir)
    assert second.info.model_id == "tiny:2" and second.info.source == "random weights"
    assert second.info.parameters == model.info.parameters
    image = photos()[1]
    assert not np.allclose(second.predict([image])[0].depth, model.predict([image])[0].depth)
