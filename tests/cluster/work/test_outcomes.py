"""The scheduler's decisions without Ray: how finished items are sorted, the give-back budget,
how many items to claim, and when the services items need are probed."""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cluster.work import outcomes
from cluster.work.outcomes import (
    MAX_GIVE_BACKS,
    Dependency,
    GiveBacks,
    due_dependencies,
    free_slots,
    healthy,
    sort_outcomes,
    wanted,
)
from cluster.work.processing import Outcome
from db.queue import ClaimedItem


def claimed(kind: str = "photo") -> ClaimedItem:
    now = datetime.now(UTC)
    return ClaimedItem(
        id=uuid.uuid4(), media_id=uuid.uuid4(), model_id="tiny", kind=kind, bytes=1000,
        mime="image/jpeg", storage_key=f"originals/{uuid.uuid4().hex}", priority=0, attempts=1,
        max_attempts=3, lease_owner="scheduler-test", lease_expires_at=now, queued_at=now)


def outcome(status: str, item: ClaimedItem | None = None, **fields) -> Outcome:
    return Outcome.of(item or claimed(), status, **fields)


def healthy_deps() -> dict[str, Dependency]:
    return {"depth": Dependency(ok=True, error=None), "storage": Dependency(ok=True, error=None)}


# ------------------------------------------------------------------------------ sort_outcomes


def test_completed_and_failed_outcomes_are_sorted_apart():
    done, failed, retry = outcome("completed"), outcome("failed", error="corrupt"), outcome("retry")
    deps = healthy_deps()
    sorted_ = sort_outcomes([done, failed, retry], deps, GiveBacks())
    assert sorted_.completed == [done]
    assert sorted_.failed == [failed, retry]  # both go to queue.fail (retryable or not)
    assert sorted_.given_back == []
    assert healthy(deps)  # nothing here says a service is down


def test_unavailable_is_given_back_and_marks_its_service_down():
    deps = healthy_deps()
    o = outcome("unavailable", error="storage unavailable: refused", dependency="storage")
    sorted_ = sort_outcomes([o], deps, GiveBacks())
    assert sorted_.given_back == [o] and not sorted_.failed and not sorted_.completed
    assert deps["storage"].ok is False and deps["storage"].error == "storage unavailable: refused"
    assert deps["depth"].ok is True


def test_unavailable_without_a_named_service_marks_depth_down():
    deps = healthy_deps()
    sort_outcomes([outcome("unavailable")], deps, GiveBacks())
    assert deps["depth"].ok is False and deps["depth"].error == "unavailable"
    assert deps["storage"].ok is True


def test_an_item_given_back_too_often_is_retried_and_then_may_be_given_back_again():
    item, give_backs = claimed(), GiveBacks()
    for _ in range(MAX_GIVE_BACKS):
        sorted_ = sort_outcomes([outcome("unavailable", item, error="down")], healthy_deps(), give_backs)
        assert len(sorted_.given_back) == 1
    sorted_ = sort_outcomes([outcome("unavailable", item, error="down")], healthy_deps(), give_backs)
    assert sorted_.given_back == []
    (retried,) = sorted_.failed
    assert retried.status == "retry" and retried.error == "down"  # now it costs an attempt
    assert len(give_backs) == 0  # the count starts again
    sorted_ = sort_outcomes([outcome("unavailable", item)], healthy_deps(), give_backs)
    assert len(sorted_.given_back) == 1


def test_any_other_outcome_resets_the_give_back_count():
    item, give_backs = claimed(), GiveBacks()
    for _ in range(MAX_GIVE_BACKS):
        sort_outcomes([outcome("unavailable", item)], healthy_deps(), give_backs)
    sort_outcomes([outcome("retry", item)], healthy_deps(), give_backs)
    assert len(give_backs) == 0
    sorted_ = sort_outcomes([outcome("unavailable", item)], healthy_deps(), give_backs)
    assert len(sorted_.given_back) == 1


def test_the_give_back_budget_is_per_item():
    give_backs = GiveBacks(limit=1)
    a, b = uuid.uuid4(), uuid.uuid4()
    assert give_backs.may_give_back(a) and give_backs.may_give_back(b)
    assert not give_backs.may_give_back(a)
    give_backs.forget(a)
    assert give_backs.may_give_back(a)
    give_backs.forget(uuid.uuid4())  # forgetting an unknown item is harmless


def test_long_errors_are_cut_when_a_service_is_marked_down():
    dep = Dependency(ok=True, error=None)
    dep.down("x" * 2000)
    assert dep.ok is False and len(dep.error) == 500


# ------------------------------------------------------------------------------ slots


@pytest.mark.parametrize(("max_in_flight", "in_flight", "finished", "free"), [
    (8, 0, 0, 8), (8, 8, 0, 0), (8, 8, 3, 3), (8, 5, 5, 8), (4, 6, 0, -2)])
def test_free_slots_count_the_finished_as_free(max_in_flight, in_flight, finished, free):
    assert free_slots(max_in_flight, in_flight, finished) == free


def test_wanted_is_the_free_slots_only_when_running_and_healthy():
    assert wanted(5, paused=False, deps=healthy_deps()) == 5
    assert wanted(5, paused=True, deps=healthy_deps()) == 0
    assert wanted(0, paused=False, deps=healthy_deps()) == 0
    assert wanted(-2, paused=False, deps=healthy_deps()) == 0
    for name in ("depth", "storage"):
        deps = healthy_deps()
        deps[name].down("gone")
        assert wanted(5, paused=False, deps=deps) == 0


def test_nothing_is_wanted_before_the_services_are_checked():
    assert wanted(5, paused=False, deps={"depth": Dependency(), "storage": Dependency()}) == 0


# ------------------------------------------------------------------------------ dependency gating


def test_a_down_service_is_probed_often_a_healthy_one_seldom():
    down, up = Dependency(checked=100.0), Dependency(ok=True, error=None, checked=100.0)
    assert not down.due(100.0 + outcomes.CHECK_DOWN_S - 0.1)
    assert down.due(100.0 + outcomes.CHECK_DOWN_S)
    assert not up.due(100.0 + outcomes.CHECK_HEALTHY_S - 0.1)
    assert up.due(100.0 + outcomes.CHECK_HEALTHY_S)
    assert outcomes.CHECK_DOWN_S < outcomes.CHECK_HEALTHY_S


def test_a_new_dependency_is_down_and_due_at_once():
    dep = Dependency()
    assert dep.ok is False and dep.error == "not checked yet"
    assert dep.due(outcomes.CHECK_DOWN_S)


def test_due_dependencies_names_those_to_probe_and_marks_them_checked():
    deps = {"depth": Dependency(ok=True, error=None, checked=95.0),
            "storage": Dependency(checked=95.0)}
    assert due_dependencies(deps, 100.0) == ["storage"]
    assert deps["storage"].checked == 100.0 and deps["depth"].checked == 95.0
    assert due_dependencies(deps, 101.0) == []
    assert due_dependencies(deps, 105.0) == ["depth", "storage"]  # in order: depth first
    assert deps["depth"].checked == deps["storage"].checked == 105.0


def test_up_clears_the_error():
    dep = Dependency()
    dep.up()
    assert dep.ok is True and dep.error is None
    assert healthy({"depth": dep})


# ------------------------------------------------------------------------------ the actor's tasks


class UnheldRef:
    """Stands in for a Ray ObjectRef: awaiting it waits on a future that only the awaiting task
    holds, so nothing but the scheduler can keep that task alive."""

    def __init__(self) -> None:
        self.future: weakref.ref[asyncio.Future] | None = None

    def __await__(self):
        future = asyncio.get_running_loop().create_future()
        self.future = weakref.ref(future)
        return (yield from future)


@pytest.fixture
def bare_scheduler(monkeypatch, tmp_path):
    """The actor's class as a plain object, without Ray, a database or metrics; Ray tasks are
    UnheldRefs (in ``scheduler.refs``)."""
    from cluster.config.settings import Settings
    from cluster.work import scheduler as scheduler_module

    refs: list[UnheldRef] = []

    class FakeTask:
        @staticmethod
        def options(**_options):
            return FakeTask

        @staticmethod
        def remote(item, settings, app_name):
            refs.append(UnheldRef())
            return refs[-1]

    class FakeDatabase:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def open(self):
            return self

    monkeypatch.setattr(scheduler_module, "process_item_task", FakeTask)
    monkeypatch.setattr(scheduler_module, "Database", FakeDatabase)
    monkeypatch.setattr(scheduler_module.Scheduler, "_metrics", lambda self: None)
    # Constructed outside an event loop: it does not start its loops.
    scheduler = scheduler_module.Scheduler(Settings(home=tmp_path, database_url="postgresql://x",
                                                    scheduler_max_in_flight=4))
    scheduler.refs = refs
    return scheduler


def test_the_scheduler_holds_the_tasks_awaiting_its_items(bare_scheduler):
    """The event loop holds tasks only weakly: one awaiting an item must be referenced by the
    scheduler while in flight, or it can be collected and the item's outcome never recorded."""
    scheduler, item = bare_scheduler, claimed()

    async def run() -> None:
        before = set(asyncio.all_tasks())
        scheduler._dispatch(item)
        (task,) = set(asyncio.all_tasks()) - before
        task_ref = weakref.ref(task)
        del task
        await asyncio.sleep(0)  # the task runs up to its await
        assert item.id in scheduler.in_flight
        gc.collect()
        task = task_ref()
        assert task is not None and not task.done(), "the task awaiting the item was collected"
        done = outcome("completed", item)
        scheduler.refs[0].future().set_result(done)
        await task
        assert scheduler.finished == [done]
        assert scheduler.wake.is_set()
        await asyncio.sleep(0)  # done callbacks run
        assert not scheduler._item_tasks  # forgotten once done

    asyncio.run(run())


def in_flight(scheduler, n: int) -> list[ClaimedItem]:
    from cluster.work.scheduler import InFlight

    items = [claimed() for _ in range(n)]
    for item in items:
        scheduler.in_flight[item.id] = InFlight(item, None, 0.0)
    return items


def record_and_claim(scheduler, fail: Exception | None = None):
    """Run one cycle with the services just checked healthy; what ``_record`` was given."""
    import time

    for dep in scheduler.deps.values():
        dep.up()
        dep.checked = time.monotonic()  # not due: no probe runs
    recorded = []

    def record(outcomes, wanted):
        recorded.append((outcomes, wanted))
        if fail is not None:
            raise fail
        return []

    scheduler._record = record
    items, wanted = asyncio.run(scheduler._record_and_claim())
    (outcomes, wanted_recorded) = recorded[0]
    assert wanted == wanted_recorded and items == []
    return outcomes, wanted


def test_a_cycle_claims_for_the_slots_its_finished_items_free(bare_scheduler):
    items = in_flight(bare_scheduler, 4)
    bare_scheduler.finished = [outcome("completed", items[0]), outcome("failed", items[1])]
    outcomes, wanted = record_and_claim(bare_scheduler)
    assert wanted == 2
    assert [o.lease.item_id for o in outcomes.completed] == [items[0].id]
    assert [o.lease.item_id for o in outcomes.failed] == [items[1].id]
    assert set(bare_scheduler.in_flight) == {items[2].id, items[3].id}
    assert bare_scheduler.finished == []


def test_a_cycle_claims_nothing_while_paused(bare_scheduler):
    in_flight(bare_scheduler, 1)
    bare_scheduler.paused = True
    assert record_and_claim(bare_scheduler)[1] == 0


def test_an_item_a_down_service_sent_back_stops_the_claims_of_its_cycle(bare_scheduler):
    items = in_flight(bare_scheduler, 2)
    back = outcome("unavailable", items[0], error="storage unavailable: x", dependency="storage")
    bare_scheduler.finished = [back]
    outcomes, wanted = record_and_claim(bare_scheduler)
    assert outcomes.given_back == [back] and wanted == 0
    assert bare_scheduler.deps["storage"].ok is False
    assert set(bare_scheduler.in_flight) == {items[1].id}


def test_a_cycle_that_fails_to_record_keeps_its_outcomes_for_the_next(bare_scheduler):
    items = in_flight(bare_scheduler, 2)
    finished = [outcome("completed", items[0])]
    bare_scheduler.finished = list(finished)
    with pytest.raises(ConnectionError):
        record_and_claim(bare_scheduler, fail=ConnectionError("database down"))
    assert bare_scheduler.finished == finished
    assert set(bare_scheduler.in_flight) == {i.id for i in items}


def test_the_decisions_load_without_ray():
    import subprocess
    import sys

    code = "import sys, cluster.work.outcomes; print('ray' in sys.modules)"
    root = Path(__file__).resolve().parents[3]  # this checkout's cluster, not an installed one
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=root)
    assert result.stdout.strip() == "False"
