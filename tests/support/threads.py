"""Run code in several threads released at one moment, as workers starting together or two operators do."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

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
