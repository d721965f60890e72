"""A tiny API that verifies HS256 tokens with the shared secret: GET /api/me and GET /api/admin.

    python3 demo/hs256/hs256_api.py SECRET_FILE

It listens on a free port on 127.0.0.1 and prints the URL. Demo code only: `make demo` starts it.
"""

from __future__ import annotations

from hs256_jwt import InvalidToken, JsonHandler, serve, verify

# The scope each path needs.
PATHS = {"/api/me": "profile", "/api/admin": "admin"}


class Handler(JsonHandler):
    """Answer GET /api/me and GET /api/admin for a valid bearer token."""

    def do_GET(self) -> None:
        """Verify the bearer token locally and answer with its claims."""
        needed = PATHS.get(self.path)
        if needed is None:
            self.reply(404, {"error": "not_found"})
            return
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise InvalidToken("no bearer token")
            claims = verify(token.strip(), self.secret)
        except InvalidToken:
            self.reply(401, {"error": "invalid_token"})
            return
        if needed not in str(claims.get("scope", "")).split():
            self.reply(403, {"error": "insufficient_scope"})
            return
        self.reply(200, {"path": self.path, "sub": claims.get("sub"), "scope": claims.get("scope")})


if __name__ == "__main__":
    serve(Handler)
