"""Steady traffic for the replica tests: users logging in, refreshing and calling the APIs in a loop.

Every request is recorded as a `Call` (what, when, how it ended), so that a test can tell the
failures that were in flight when something was killed from those that came later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass(frozen=True)
class Call:
    """One request of the traffic: what, when (monotonic seconds) and how it ended."""

    kind: str
    started: float
    ended: float
    outcome: str  # the HTTP status, or the exception's name

    @property
    def ok(self) -> bool:
        """Return whether the request succeeded."""
        return self.outcome == "200"


@dataclass
class Traffic:
    """Users on the issuer (through a balancer) and the profile API, and a caller of the reports API."""

    issuer_url: str
    resource_url: str
    reports_url: str = ""
    report_token: str = ""
    calls: list[Call] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _call(self, kind: str, send: Callable[..., requests.Response], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Send one request and record it; return its JSON body when it succeeded, else {}."""
        started = time.monotonic()
        body: dict[str, Any] = {}
        try:
            response = send(*args, timeout=10, **kwargs)
            outcome = str(response.status_code)
            if outcome == "200":
                body = response.json()
        except requests.RequestException as exc:
            outcome = f"{type(exc).__name__}: {exc}"[:300]
        with self.lock:
            self.calls.append(Call(kind, started, time.monotonic(), outcome))
        return body

    def user(self) -> None:
        """Log in, then refresh a few times, calling the profile API with every access token."""
        token_url = f"{self.issuer_url}/token"
        with requests.Session() as session:
            while not self.stop.is_set():
                form = {"grant_type": "password", "username": "alice", "password": "wonderland"}
                tokens = self._call("login", session.post, token_url, data=form)
                for _ in range(4):
                    if not tokens or self.stop.is_set():
                        break
                    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
                    self._call("api", session.get, f"{self.resource_url}/api/me", headers=headers)
                    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
                    tokens = self._call("refresh", session.post, token_url, data=form)

    def reporter(self) -> None:
        """Call the reports API, which calls the profile API with its own token from the issuer."""
        headers = {"Authorization": f"Bearer {self.report_token}"}
        with requests.Session() as session:
            while not self.stop.wait(0.1):
                self._call("report", session.get, f"{self.reports_url}/api/report", headers=headers)
