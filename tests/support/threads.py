"""Run code in several threads released at one moment (as workers starting together do), or on a loop of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def together(n: int, function: Callable[[], T]) -> list[T | BaseException]:
    """Run `function` in `n` threads released by one barrier; return each result, or the exception it raised."""
    barrier = threading.Barrier(n)
    results: list[T | BaseException] = [RuntimeError("did not run")] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = function()
        except Exception as exc:  # noqa: BLE001 -- handed back to the test, which asserts on it
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def on_a_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main` on a new event loop in a thread of its own, re-raising what it raised.

    Not in the test's thread: another test's tool may have left a loop running there
    (Playwright's sync API does), and `asyncio.run` refuses to start inside one.
    """
    raised: list[Exception] = []

    def run() -> None:
        try:
            asyncio.run(main())
        except Exception as exc:  # noqa: BLE001 - handed to the test's thread, which re-raises it
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    if raised:
        raise raised[0]
