"""Say when a check runs on an event loop, so that nothing there blocks it with a fetch.

The FastAPI integration wraps its check on the loop in `loop_thread()`; inside it a JWKS key
not held (`jwt_verifier.fastapi`) or a status list not held (`jwt_verifier.status`) raises
instead of being fetched, and the integration verifies in a worker thread. Never guessed from
a running loop: a WSGI app may run where one happens to run (Playwright's sync API leaves one
in its thread), and it has no worker thread to hand the fetch to.
"""

from __future__ import annotations

import contextvars
from types import TracebackType

__all__ = ["loop_thread", "on_the_loop"]

_ON_THE_LOOP: contextvars.ContextVar[bool] = contextvars.ContextVar("jwt_verifier.on_the_loop", default=False)


class loop_thread:  # lower case: it is used as a function, `with loop_thread():`
    """Within this block, a key or status list not held yet raises rather than being fetched.

    A class rather than a generator under `contextlib.contextmanager`: it is entered on every
    request an ASGI app checks, and this costs a third as much.
    """

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _ON_THE_LOOP.set(True)

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        _ON_THE_LOOP.reset(self._token)


def on_the_loop() -> bool:
    """Return whether the caller is inside `loop_thread()`: it must not fetch."""
    return _ON_THE_LOOP.get()
