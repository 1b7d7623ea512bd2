"""Where the depth work runs: the replicas' GPUs, and so where photos are decoded."""

from __future__ import annotations

import pytest

from cluster.config.placement import photos_decode_in_replica, placed
from cluster.config.settings import Settings


def settings(tmp_path, **kw) -> Settings:
    return Settings(home=tmp_path, database_url="postgresql://unused", **kw)


@pytest.mark.parametrize(("gpus", "decode", "in_replica"), [
    (1, "auto", True),  # replicas with a GPU decode the photos they are sent (nvJPEG)
    (0.5, "auto", True),
    (0, "auto", False),  # on CPUs the tasks decode, each on its own core
    (None, "auto", False),  # no Ray connected here: no GPU found
    (0, "replica", True),  # set, it holds either way
    (1, "worker", False),
])
def test_photos_are_decoded_in_the_replica_where_it_has_a_gpu(tmp_path, gpus, decode, in_replica):
    s = settings(tmp_path, serve_num_gpus=gpus, photo_decode=decode)
    assert photos_decode_in_replica(s) is in_replica
    decided = placed(s)
    assert decided.photo_decode == ("replica" if in_replica else "worker")
    assert decided.serve_num_gpus == (gpus or 0)
    assert placed(decided) == decided  # decided once: the tasks read what the deployment got
