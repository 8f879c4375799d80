"""The Future combinators shared by the executor, the task types and the graders."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from azr.futures import done, gather, then


def test_then_and_gather_compose_and_keep_order() -> None:
    assert then(done(2), lambda x: x + 1).result() == 3
    assert gather([done(1), then(done(1), lambda x: x * 5)]).result() == [1, 5]
    assert gather([]).result() == []


def test_then_passes_on_the_outcome_of_a_returned_future() -> None:
    inner: Future[int] = Future()
    chained = then(done(1), lambda _: inner)
    assert not chained.done()
    inner.set_result(7)
    assert chained.result() == 7


def test_errors_reach_whoever_waits() -> None:
    with pytest.raises(ZeroDivisionError):
        then(done(0), lambda x: 1 / x).result()
    failing: Future[int] = Future()
    failing.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        gather([done(1), failing]).result()
    with pytest.raises(KeyError):
        then(failing, lambda x: x).result()


def test_gather_completes_when_the_last_future_does() -> None:
    late: Future[int] = Future()
    combined = gather([done(1), late])
    assert not combined.done()
    late.set_result(2)
    assert combined.result() == [1, 2]
