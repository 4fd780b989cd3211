"""The deadline runner: a call's result, its error, or an Overrun at the budget, waited for from a
thread (`call`) or from an event loop (`run`); stuck threads counted until they come back."""

import asyncio
import threading

import pytest

from webhook.deadline import DeadlineRunner, Overrun


def both(runner, function, budget):
    """`function` through `call` and through `run`: each outcome, as ('value', v) or ('error', e)."""

    def outcome(step):
        try:
            return "value", step()
        except BaseException as error:  # noqa: BLE001  what a plugin may raise comes back as it was
            return "error", error

    async def awaited():
        return await runner.run(function, budget)

    return outcome(lambda: runner.call(function, budget)), outcome(lambda: asyncio.run(awaited()))


def test_a_value_and_an_error_come_back_as_they_were():
    runner = DeadlineRunner()
    assert both(runner, lambda: 42, 5) == (("value", 42), ("value", 42))
    for kind, error in both(runner, lambda: (_ for _ in ()).throw(SystemExit(3)), 5):
        assert kind == "error" and isinstance(error, SystemExit) and error.code == 3


def test_an_overrun_is_raised_at_the_budget_and_the_thread_counted_until_it_returns():
    release = threading.Event()
    exhausted = []
    runner = DeadlineRunner(max_stuck=2, on_exhausted=lambda: exhausted.append(True))
    outcomes = both(runner, release.wait, 0.05)
    assert [kind for kind, _ in outcomes] == ["error", "error"]
    assert all(isinstance(error, Overrun) for _, error in outcomes)
    assert runner.stuck == 2 and exhausted == [True]  # once, at max_stuck
    release.set()
    for _ in range(200):
        if runner.stuck == 0:
            break
        threading.Event().wait(0.01)
    assert runner.stuck == 0
    assert both(runner, lambda: "again", 5) == (("value", "again"), ("value", "again"))  # threads reused


def test_a_call_that_returns_after_its_overrun_does_not_disturb_the_loop():
    release = threading.Event()
    runner = DeadlineRunner()

    async def scenario():
        with pytest.raises(Overrun):
            await runner.run(release.wait, 0.05)
        release.set()  # returns now, after the loop stopped waiting: nothing is left to settle wrongly
        await asyncio.sleep(0.05)
        return await runner.run(lambda: "next", 5)

    assert asyncio.run(scenario()) == "next"
