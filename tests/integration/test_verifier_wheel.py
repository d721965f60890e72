"""The verifier library as a team would install it: its wheel alone, in a fresh virtual environment.

The wheel is built from shared/verifier, installed into a new venv with nothing but its own
dependencies (pinned as in requirements/runtime.lock, `pip check` proving the set complete),
and a script there imports the core, checks that no web framework is loaded or even
installed, and verifies a token against a JWKS served on loopback. Any step that cannot be
done fails the test: a library that cannot be built is a defect, not a skipped test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import jwt_verifier

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "runtime.lock"
# The wheel's dependencies (cryptography, requests) and theirs.
CLOSURE = ("cryptography", "cffi", "pycparser", "requests", "charset-normalizer", "idna", "urllib3", "certifi")

SCRIPT = r"""
import importlib.util
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

import jwt_verifier
from jwt_verifier import InvalidToken, JwksClient, Reason, Verifier, VerifierConfig
from jwt_verifier.jose import b64url_encode, public_jwk

FRAMEWORKS = ("flask", "werkzeug", "fastapi", "starlette")
assert not [m for m in sys.modules if m.split(".")[0] in FRAMEWORKS], sorted(sys.modules)
assert all(importlib.util.find_spec(name) is None for name in FRAMEWORKS), "a framework is installed"
assert importlib.util.find_spec("shared") is None and importlib.util.find_spec("issuer") is None

key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = public_jwk(key.public_key())
body = json.dumps({"keys": [jwk]}).encode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "max-age=300")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
issuer = "https://issuer.example"
config = VerifierConfig(
    issuer=issuer,
    audience="orders-api",
    resource="https://orders.example",
    jwks_url=f"http://127.0.0.1:{server.server_address[1]}/jwks.json",
)


def sign(claims):
    header = {"alg": "RS256", "typ": "at+jwt", "kid": jwk["kid"]}
    signing_input = ".".join(b64url_encode(json.dumps(part).encode()) for part in (header, claims))
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url_encode(signature)}"


now = int(time.time())
claims = {"iss": issuer, "aud": "orders-api", "sub": "alice", "jti": "j1", "iat": now, "exp": now + 300}
verifier = Verifier(JwksClient(config), issuer=config.issuer, audience=config.audience)
assert verifier.verify(sign(claims))["sub"] == "alice"
try:
    verifier.verify(sign({**claims, "aud": "other-api"}))
except InvalidToken as refusal:
    assert refusal.reason is Reason.WRONG_AUDIENCE
    assert refusal.status == 401
else:
    raise AssertionError("a token for another API was accepted")
server.shutdown()
print("verified with jwt_verifier", jwt_verifier.__version__)
"""


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run([str(arg) for arg in args], capture_output=True, text=True, cwd=cwd, check=False)
    assert result.returncode == 0, f"{args[:4]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _pinned_closure() -> str:
    """Return the runtime lock's entries (versions and hashes) for the wheel's dependency closure."""
    entries = re.split(r"\n(?=[a-z0-9])", LOCK.read_text())
    wanted = [entry for entry in entries if entry.split("==")[0] in CLOSURE]
    assert len(wanted) == len(CLOSURE), "the runtime lock lacks one of the wheel's dependencies"
    return "\n".join(re.sub(r"\n\s*#.*", "", entry) for entry in wanted) + "\n"


def test_the_wheel_alone_in_a_fresh_venv_verifies_a_token(tmp_path: Path) -> None:
    source = tmp_path / "verifier"
    shutil.copytree(ROOT / "shared" / "verifier", source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, source)
    [wheel] = wheels.glob("jwt_split_verifier-*.whl")
    assert wheel.name.startswith(f"jwt_split_verifier-{jwt_verifier.__version__}-")  # one version, two places

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    requirements = tmp_path / "closure.txt"
    requirements.write_text(_pinned_closure())
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--require-hashes", "-r", requirements)
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel)
    _run(python, "-m", "pip", "check")

    output = _run(python, "-c", SCRIPT, cwd=tmp_path)
    assert output.strip() == f"verified with jwt_verifier {jwt_verifier.__version__}"
