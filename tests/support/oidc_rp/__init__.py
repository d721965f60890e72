"""A third-party OpenID Connect relying party for the tests: panva's openid-client, driven over JSON.

`rp.mjs` holds the Node side (one command per step of the flow); `make install` installs its
locked dependencies (`npm ci`). The library, not our code, validates discovery, the
authorization response (state, `iss`), the ID token (signature, `iss`, `aud`, `nonce`, `exp`,
`at_hash`) and userinfo; a check it refuses comes back as `Refused`. Given a `dpop_jwk`, it
also makes the DPoP proofs (RFC 9449) at the token endpoint and the APIs.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.stack import Stack

DRIVER = Path(__file__).with_name("rp.mjs")
# rp.mjs exits with 3 when the library refuses something (and prints what), 1 when it crashes.
_REFUSED = 3


@dataclass(frozen=True)
class Refused:
    """What the library refused: its error class and code, the OAuth error the server sent or the check that failed."""

    name: str
    code: str | None
    error: str | None
    error_description: str | None
    message: str
    reason: str | None
    claim: str | None


@dataclass(frozen=True)
class RelyingParty:
    """A confidential client (client_secret_basic) of the issuer at `issuer`, reached at `reach`."""

    issuer: str
    reach: str
    client_id: str
    client_secret: str

    def _driver(self, command: str, request: dict[str, Any]) -> tuple[list[str], str]:
        """Return the driver's command line and its JSON input: this client's settings and `request`."""
        node = shutil.which("node")
        assert node is not None, "the relying-party tests need Node.js (`node` on PATH)"
        settings = {
            "issuer": self.issuer,
            "reach": self.reach,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        return [node, str(DRIVER), command], json.dumps({**settings, **request})

    def run(self, command: str, **request: Any) -> dict[str, Any] | Refused:
        """Run one command of the driver; return its answer, or what the library refused."""
        argv, given = self._driver(command, request)
        done = subprocess.run(
            argv,
            input=given,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode in (0, _REFUSED), f"rp.mjs {command} crashed: {done.stderr}"
        answer: dict[str, Any] = json.loads(done.stdout)
        if done.returncode == _REFUSED:
            return Refused(**answer["refused"])
        return answer

    def start(self, command: str, **request: Any) -> subprocess.Popen[str]:
        """Start one command of the driver in the background (the device grant, which polls); the caller waits for it."""
        argv, text = self._driver(command, request)
        # The request from a file, not a pipe: `communicate` later needs no stdin of its own to flush.
        with tempfile.TemporaryFile("w+", encoding="utf-8") as given:
            given.write(text)
            given.seek(0)
            return subprocess.Popen(argv, stdin=given, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def call(self, command: str, **request: Any) -> dict[str, Any]:
        """Run one command that must succeed; return its answer."""
        answer = self.run(command, **request)
        assert not isinstance(answer, Refused), f"openid-client refused {command}: {answer}"
        return answer

    def refusal(self, command: str, **request: Any) -> Refused:
        """Run one command that the library must refuse; return what it refused."""
        answer = self.run(command, **request)
        # Say what was accepted by its claims, not its tokens (they make the message unreadable).
        assert isinstance(answer, Refused), f"openid-client accepted {command}: {answer.get('claims', sorted(answer))}"
        return answer


def register(stack: Stack, prefix: str, *options: str) -> RelyingParty:
    """Register a confidential client of the test's own with the issuer CLI; return it as a relying party.

    `options` are `issuer clients add`'s (`--grant ...`, `--redirect-uri ...`); the client id is
    `prefix` and a random suffix, its secret (client_secret_basic) random, given on stdin.
    """
    client_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    secret = secrets.token_urlsafe(32)
    added = stack.issuer_cli("clients", "add", client_id, *options, "--secret-stdin", stdin=secret + "\n")
    assert added.returncode == 0, added.stderr
    return RelyingParty(stack.public_issuer, stack.issuer_url, client_id, secret)
