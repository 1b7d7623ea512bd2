"""The health check's shared answer: one check at a time, reused for a short while."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.api.context import SharedAnswer


class CountingCheck:
    def __init__(self, seconds: float = 0.05) -> None:
        self.calls = 0
        self.seconds = seconds

    async def __call__(self) -> int:
        self.calls += 1
        await asyncio.sleep(self.seconds)
        return self.calls


def test_callers_arriving_during_a_check_share_it():
    async def main():
        shared, check = SharedAnswer(ttl_s=10), CountingCheck()
        answers = await asyncio.gather(*(shared.get(check) for _ in range(20)))
        return answers, check.calls

    answers, calls = asyncio.run(main())
    assert calls == 1 and answers == [1] * 20


def test_an_answer_is_reused_until_it_is_older_than_the_ttl():
    async def main():
        shared, check = SharedAnswer(ttl_s=0.3), CountingCheck(seconds=0)
        first = [await shared.get(check), await shared.get(check)]
        await asyncio.sleep(0.35)
        return first, await shared.get(check)

    assert asyncio.run(main()) == ([1, 1], 2)


def test_a_failed_check_is_not_kept():
    async def main():
        shared, attempts = SharedAnswer(ttl_s=10), []

        async def flaky() -> str:
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("down")
            return "up"

        with pytest.raises(RuntimeError):
            await shared.get(flaky)
        return await shared.get(flaky)

    assert asyncio.run(main()) == "up"


def test_a_caller_that_goes_away_does_not_cancel_the_check_for_the_others():
    async def main():
        shared, check = SharedAnswer(ttl_s=10), CountingCheck(seconds=0.1)
        leaving = asyncio.ensure_future(shared.get(check))
        staying = asyncio.ensure_future(shared.get(check))
        await asyncio.sleep(0.02)
        leaving.cancel()
        return await staying, check.calls

    assert asyncio.run(main()) == (1, 1)


def test_latest_answers_at_once_with_the_last_state_and_refreshes_behind():
    async def main():
        shared, check = SharedAnswer(ttl_s=0.1), CountingCheck(seconds=0.3)
        first = await shared.latest(check)  # nothing known yet: this one waits
        await asyncio.sleep(0.15)
        loop = asyncio.get_running_loop()
        started = loop.time()
        stale, age = await shared.latest(check)  # old: answered at once, refresh started
        waited = loop.time() - started
        await asyncio.sleep(0.4)
        fresh, _ = await shared.latest(check)
        return first, stale, age, waited, fresh, check.calls

    first, stale, age, waited, fresh, calls = asyncio.run(main())
    assert first == (1, 0.0)
    assert stale == 1 and age >= 0.1
    assert waited < 0.25  # did not wait for the 0.3 s check
    assert fresh == 2 and calls == 2


def test_latest_waits_only_once_the_answer_is_older_than_its_limit():
    async def main():
        shared, check = SharedAnswer(ttl_s=0.1), CountingCheck(seconds=0.05)
        first = await shared.latest(check, max_age_s=0.5)  # nothing yet: waits
        await asyncio.sleep(0.15)
        stale = await shared.latest(check, max_age_s=0.5)  # old: at once, refresh behind it
        await asyncio.sleep(0.1)
        fresh = await shared.latest(check, max_age_s=0.5)
        shared._at -= 10  # the background checks stopped answering long ago
        waited = await shared.latest(check, max_age_s=0.5)
        return first, stale, fresh, waited

    (v1, _), (v2, age2), (v3, _), (v4, age4) = asyncio.run(main())
    assert (v1, v2, v3, v4) == (1, 1, 2, 3)
    assert age2 >= 0.15 and age4 < 0.5
