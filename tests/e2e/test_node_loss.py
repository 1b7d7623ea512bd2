"""Node loss on a multi-node Ray cluster (a head and two workers on this machine): a worker node
removed mid-run, the scheduler's node removed, a gateway replica killed while it serves the port,
the whole cluster stopped and started again. The cluster runs in a process of its own
(``devkit/node_loss.py``), started once for the four scenarios in turn, so it never meets
the session's cluster; each test asserts one scenario's result and says what went wrong."""

from __future__ import annotations

import json

import pytest

from devkit.node_loss import SCENARIOS, run_in_own_process

# One run of every scenario, in the first test's setup: the per-test limit must cover it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(960)]

# In flight when each fault lands; bench/node_loss_bench.py runs the same with a few hundred.
ITEMS = 50


@pytest.fixture(scope="module")
def node_loss(database_factory, tmp_path_factory) -> dict:
    with database_factory.database() as url:
        return run_in_own_process(url, tmp_path_factory.mktemp("node-loss"), items=ITEMS,
                                  timeout=900)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_item_completes_once_after(node_loss, scenario):
    assert "start" in node_loss, f"the cluster did not start:\n{node_loss['log']}"
    result = node_loss.get(scenario)
    assert result is not None, f"{scenario} did not run (exit {node_loss['returncode']}):\n" \
                               f"{node_loss['log']}"
    assert result["ok"], f"{scenario}: {result['error']}\n{result['traceback']}"
    print(json.dumps({scenario: result}))  # the figures, in the test's output


def test_the_gateway_replicas_ran_on_more_than_one_node(node_loss):
    gateway = node_loss.get("gateway", {})
    if not gateway.get("ok"):
        pytest.skip("the gateway scenario failed (reported by its own test)")
    assert gateway["gateway_nodes"] >= 2, gateway
