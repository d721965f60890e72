"""HEAD on an ASGI app's GET routes: answered as GET, without the body (RFC 9110 section 9.3.2).

FastAPI routes declare their methods, and a GET route does not take HEAD (Starlette's own
routes do): a client or a monitor probing with HEAD would get 405. `HeadAsGet` runs a HEAD
request as GET, so it passes the same checks (a protected route still wants its token and
answers its challenge), and sends the status and headers of the GET without its body. The
method the client sent stays in the scope under `jwt_verifier.fastapi.METHOD_SCOPE_KEY`, so
that a DPoP proof is checked against HEAD (RFC 9449 section 4.3: `htm` is the request's method).
A route that has no GET still answers 405.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jwt_verifier.fastapi import METHOD_SCOPE_KEY

# What the router writes into the request's scope, copied back for the middleware outside (metrics).
_ROUTING_KEYS = ("route", "endpoint", "path_params")


class HeadAsGet:
    """ASGI middleware: run a HEAD request as GET and drop the body of its answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass every scope on; a HEAD request as a GET whose body is not sent."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        as_get = {**scope, "method": "GET", METHOD_SCOPE_KEY: "HEAD"}  # DPoP's htm is checked against HEAD

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.start":
                scope.update({key: as_get[key] for key in _ROUTING_KEYS if key in as_get})
            elif message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(as_get, receive, send_without_body)
