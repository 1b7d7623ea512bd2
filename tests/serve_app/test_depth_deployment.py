"""The depth deployment on a real local Ray cluster: batching forms, results match the core."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from ray import serve

from cluster.config.settings import Settings
from cluster.model.options import ModelOptions
from serve_app.depth_deployment import build_depth_app
from devkit import media_files

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    # Two served models with room for one at a time (the default, tiny, loaded at start):
    # test_one_replica_serves_two_models_loading_the_second_when_asked.
    return Settings(
        home=tmp_path_factory.mktemp("home"), model="tiny", serve_max_batch_size=8,
        serve_batch_wait_s=0.2, serve_num_cpus=0.25, model_batch_size=8,
        models=["tiny", "tiny:2"], serve_max_models_per_replica=1,
    )


@pytest.fixture(scope="module")
def depth_handle(serve_port, settings):
    handle = serve.run(build_depth_app(settings), name="depth-test", route_prefix=None)
    yield handle
    serve.delete("depth-test")


def test_concurrent_requests_form_batches_and_match_the_core(depth_handle, settings):
    images = [np.asarray(media_files.photo(n)) for n in ("astronaut", "chelsea", "coffee")] * 8

    async def send_all():
        return await asyncio.gather(*[depth_handle.remote(im) for im in images])

    results = asyncio.run(send_all())
    info = depth_handle.info.remote().result()
    assert info["mean_batch_size"] > 1, info
    assert info["largest_batch"] <= 8
    assert info["model_id"] == "tiny" and info["real_estimate"] is False

    core = ModelOptions.from_settings(settings).load()
    direct = core.predict(images[:3])
    for got, want in zip(results[:3], direct):
        assert got.ok
        np.testing.assert_allclose(got.depth, want.depth, rtol=1e-4, atol=1e-4)


def test_one_replica_serves_two_models_loading_the_second_when_asked(depth_handle, settings):
    # Each request goes to its own model's weights, whatever the replica held before, and
    # batches of mixed requests never mix models.
    handle = depth_handle
    assert set(handle.info.remote().result()["loaded_models"]) == {"tiny"}
    options = ModelOptions.from_settings(settings)
    images = [np.asarray(media_files.photo(n)) for n in ("astronaut", "chelsea")]
    want = {m: options.for_model(m).load().predict(images) for m in ("tiny", "tiny:2")}
    assert not np.allclose(want["tiny"][0].depth, want["tiny:2"][0].depth)

    second = handle.options(multiplexed_model_id="tiny:2")
    got = second.remote(images[0]).result()
    np.testing.assert_allclose(got.depth, want["tiny:2"][0].depth, rtol=1e-4, atol=1e-4)
    info = second.info.remote().result()
    assert set(info["loaded_models"]) == {"tiny:2"}  # one at a time: tiny made way
    assert info["loaded_models"]["tiny:2"]["real_estimate"] is False

    async def mixed():
        return await asyncio.gather(*[
            handle.options(multiplexed_model_id=m).remote(im)
            for m in ("tiny", "tiny:2") * 2 for im in images])

    answers = asyncio.run(mixed())
    for i, answer in enumerate(answers):
        model, image = ("tiny", "tiny:2")[(i // 2) % 2], i % 2
        np.testing.assert_allclose(answer.depth, want[model][image].depth,
                                   rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception, match="'tiny:9' is not served here"):
        handle.options(multiplexed_model_id="tiny:9").remote(images[0]).result()


def test_requested_output_size_and_bad_inputs(depth_handle):
    image = np.asarray(media_files.photo("chelsea"))
    good = depth_handle.remote(image, (30, 45)).result()
    assert good.ok and good.depth.shape == (30, 45)
    bad = depth_handle.remote(np.zeros((3,), np.uint8)).result()
    assert not bad.ok and "H×W×3" in bad.error


def test_photos_sent_as_bytes_are_decoded_by_the_replica_in_batches(depth_handle, settings):
    """The photo method: encoded photos in (a batch of them, as the processing tasks send them
    with PHOTO_DECODE=replica), each photo's depth and renditions out, a bad one failing alone,
    the model chosen per request as for pixels."""
    from cluster.model.photos import depth_for_photos

    contents = [media_files.jpeg_bytes(media_files.photo(n)) for n in ("astronaut", "coffee")]
    contents.append(media_files.exif_jpeg(media_files.photo("chelsea"), 6))
    sizes = [(40, 40), None, (45, 30)]
    before = depth_handle.info.remote().result()

    async def send_all():
        return await asyncio.gather(
            *[depth_handle.photo.remote(c, s) for c, s in zip(contents, sizes)],
            depth_handle.photo.remote(b"not a photo", None))

    *answers, bad = asyncio.run(send_all())
    assert not bad.depth.ok and bad.depth.error.startswith("cannot decode the photo")
    after = depth_handle.info.remote().result()
    assert after["batches"] - before["batches"] < 4  # the four requests shared batches
    assert after["photo_decoder"] == "pillow"  # no GPU here
    core = ModelOptions.from_settings(settings).load()
    for answer, want in zip(answers, depth_for_photos(core, contents, sizes)):
        assert answer.depth.ok and answer.decoder == "pillow"  # no GPU here
        np.testing.assert_allclose(answer.depth.depth, want.depth.depth, rtol=1e-4, atol=1e-4)
        assert answer.thumbnail.shape == want.thumbnail.shape and answer.preview_jpeg
    assert answers[2].thumbnail.shape == (250, 166, 3)  # the turned photo, upright
    other = depth_handle.options(multiplexed_model_id="tiny:2").photo.remote(contents[0], (40, 40))
    assert not np.allclose(other.result().depth.depth, answers[0].depth.depth)


def test_batch_settings_change_through_user_config(depth_handle, settings):
    app = build_depth_app(settings.model_copy(update={"serve_max_batch_size": 2}))
    handle = serve.run(app, name="depth-test", route_prefix=None)
    images = [np.asarray(media_files.photo("astronaut"))] * 6

    async def send_all():
        return await asyncio.gather(*[handle.remote(im) for im in images])

    before = handle.info.remote().result()
    asyncio.run(send_all())
    after = handle.info.remote().result()
    assert after["batching"]["max_batch_size"] == 2
    assert after["largest_batch"] <= max(2, before["largest_batch"])
    # Unset, the batch is what the replica's model takes in one pass: one image on a CPU.
    unset = build_depth_app(settings.model_copy(update={"serve_max_batch_size": None,
                                                        "model_batch_size": None}))
    handle = serve.run(unset, name="depth-test", route_prefix=None)
    assert handle.info.remote().result()["batching"]["max_batch_size"] == 1


def test_health_check_fails_when_the_model_is_broken(settings):
    from serve_app.depth_deployment import DepthDeployment

    replica = DepthDeployment.func_or_class(ModelOptions.from_settings(settings))
    replica.check_health()
    replica.core.forward = None  # what a CUDA fault or a freed model looks like from here
    with pytest.raises(RuntimeError, match="depth model is broken"):
        replica.check_health()



def test_a_model_serve_unloads_is_forgotten_and_its_weights_freed(settings):
    import gc
    import weakref

    from serve_app.depth_deployment import LoadedModel

    core = ModelOptions.from_settings(settings).load()
    loaded = {"tiny": core}
    entry = LoadedModel("tiny", core, loaded)
    weights = weakref.ref(core)
    del core
    entry.__del__()  # what Serve's LRU calls when it unloads the model
    assert loaded == {} and entry.core is None
    gc.collect()
    assert weights() is None  # nothing in the replica holds the weights any more
    entry.__del__()  # the collector's own call later does nothing more
