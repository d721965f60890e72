"""A tiny HS256 issuer: POST /token with the password grant signs a token with the shared secret.

    python3 demo/hs256/hs256_issuer.py SECRET_FILE

It listens on a free port on 127.0.0.1 and prints the URL. Demo code only: `make demo` starts it.
"""

from __future__ import annotations

import hmac
import time
import uuid
from urllib.parse import parse_qs

from hs256_jwt import AUDIENCE, ISSUER, JsonHandler, serve, sign

# The demo's users (demo credentials) and the scopes each may have.
USERS = {"alice": ("wonderland", "profile admin"), "bob": ("builder", "profile")}


class Handler(JsonHandler):
    """Answer POST /token."""

    def do_POST(self) -> None:
        """Issue a token for a user's name and password (grant_type=password)."""
        if self.path != "/token":
            self.reply(404, {"error": "not_found"})
            return
        length = min(int(self.headers.get("Content-Length") or 0), 4096)
        form = {name: values[0] for name, values in parse_qs(self.rfile.read(length).decode()).items()}
        user = USERS.get(form.get("username", ""))
        if form.get("grant_type") != "password" or user is None:
            self.reply(400, {"error": "invalid_grant"})
            return
        if not hmac.compare_digest(user[0].encode(), form.get("password", "").encode()):
            self.reply(400, {"error": "invalid_grant"})
            return
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": form["username"],
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "scope": user[1],
        }
        self.reply(200, {"access_token": sign(claims, self.secret), "token_type": "Bearer", "expires_in": 300})


if __name__ == "__main__":
    serve(Handler)
