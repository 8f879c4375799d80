"""Small combinators on `concurrent.futures.Future`, shared by the executor, the task types and the graders.

Sandbox work is submitted as futures so that a caller can queue a whole batch and keep generating while
the workers run. These three helpers build derived futures without blocking a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
U = TypeVar("U")


def done(value: T) -> Future[T]:
    """An already-completed Future, for outcomes known without running anything."""
    future: Future[T] = Future()
    future.set_result(value)
    return future


def then(source: Future[T], transform: Callable[[T], Any]) -> Future[Any]:
    """A Future of `transform(result)`. When `transform` returns a Future, its outcome is passed on, so
    steps chain. An exception in any step is delivered to whoever waits, never lost."""
    target: Future[Any] = Future()

    def forward(finished: Future[T]) -> None:
        try:
            value = transform(finished.result())
        except BaseException as error:
            target.set_exception(error)
            return
        if isinstance(value, Future):
            value.add_done_callback(lambda inner: _copy_outcome(inner, target))
        else:
            target.set_result(value)

    source.add_done_callback(forward)
    return target


def gather(futures: Sequence[Future[T]]) -> Future[list[T]]:
    """One Future of all results, in order, completed when the last one is."""
    if not futures:
        return done([])
    target: Future[list[T]] = Future()
    remaining = [len(futures)]
    lock = threading.Lock()  # the futures may finish on several executor threads at once

    def finish(_: Future[T]) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            try:
                target.set_result([future.result() for future in futures])
            except BaseException as error:
                target.set_exception(error)

    for future in futures:
        future.add_done_callback(finish)
    return target


def _copy_outcome(source: Future[Any], target: Future[Any]) -> None:
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())
