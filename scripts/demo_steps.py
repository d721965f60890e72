"""`make demo`'s steps that curl cannot take alone: DPoP proofs, and timing a logout at both APIs.

    DEMO_PASSWORD=... python scripts/demo_steps.py dpop [--username NAME] ISSUER RESOURCE
    DEMO_PASSWORD=... python scripts/demo_steps.py revocation ISSUER RESOURCE REPORTS \\
        --username NAME --client-id ID --redirect-uri URI (--issuer-metrics URL | --issuer-metrics-command CMD)

ISSUER, RESOURCE and REPORTS are where this machine reaches the services. Each step prints in
scripts/demo's narrated style (`$` what is sent, `PROVED:` what holds; scripts/demo prints the heading) and
exits 1 with a `FAILED:` line on stderr as soon as something does not hold. The revocation step
needs a user allowed `profile` and `reports:read`, and a public client registered for the
authorization code flow with both APIs and the redirect URI (scripts/demo registers both with
the issuer CLI). The issuer's metrics are read from its metrics port (`make run`) or with a
command that prints them (compose: the port is on the compose network only).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families

from shared.dpop_client import DPoPKey

TIMEOUT = 10
# The bound: a logout reaches every worker of both APIs within this many seconds.
REVOCATION_BOUND = 2.0
# API calls made while the issuer's requests are counted.
CALLS = 100
CALLS_SECONDS = 2.5  # the calls take at least this long (see the logout step)
# Requests on fresh connections after the bound, so that every API worker answers some.
PROBES = 12
# The only issuer endpoints an API may ask while it verifies: its keys and the status lists.
VERIFICATION_ENDPOINTS = frozenset({"wellknown.jwks", "statuslist.status_list", "statuslist.aggregation"})
# Compose's health checks ask these of the issuer on their own schedule, whatever the APIs do.
HEALTH_PROBES = frozenset({"wellknown.healthz", "wellknown.readyz"})


class StepFailed(Exception):
    """A step's claim did not hold."""


def show(command: str) -> None:
    print(f"$ {command}", flush=True)


def say(text: str) -> None:
    print(text, flush=True)


def prove(text: str) -> None:
    print(f"PROVED: {text}", flush=True)


def check(holds: bool, failure: str) -> None:
    if not holds:
        raise StepFailed(failure)


def claims_of(token: str) -> dict[str, Any]:
    """Return a JWT's claims, decoded without verification (for display only)."""
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def challenge(response: requests.Response) -> str:
    return response.headers.get("WWW-Authenticate", "(no WWW-Authenticate)")


def public_url(api: str) -> str:
    """Return an API's public URL, the base of its proofs' `htu`, as its RFC 9728 metadata names it."""
    metadata = requests.get(f"{api}/.well-known/oauth-protected-resource", timeout=TIMEOUT).json()
    resource: str = metadata["resource"]
    return resource


def issuer_metadata(issuer: str) -> dict[str, Any]:
    metadata: dict[str, Any] = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=TIMEOUT).json()
    return metadata


# -- DPoP ---------------------------------------------------------------------------------------


def dpop_step(issuer: str, resource: str, username: str, password: str) -> None:
    """Bind a token to a key; show that neither the token nor a proof is worth anything to a thief."""
    say("The client makes an EC P-256 key pair and signs a proof (a small JWT naming the method and URL) with it;")
    say("the issuer binds the token to that key (cnf.jkt, the key's thumbprint). curl cannot sign, so Python does.")
    key = DPoPKey(ec.generate_private_key(ec.SECP256R1()))
    token_endpoint = issuer_metadata(issuer)["token_endpoint"]
    show(f"curl -s -H 'DPoP: $PROOF' -d grant_type=password -d username={username} -d password=... {issuer}/token")
    answer = requests.post(
        f"{issuer}/token",
        data={"grant_type": "password", "username": username, "password": password},
        headers={"DPoP": key.proof("POST", token_endpoint)},
        timeout=TIMEOUT,
    )
    check(answer.status_code == 200, f"the issuer answered {answer.status_code} to a token request with a proof")
    body = answer.json()
    token: str = body["access_token"]
    bound = claims_of(token).get("cnf", {}).get("jkt")
    say(f"token_type: {body['token_type']}, cnf: {json.dumps(claims_of(token).get('cnf'))}")
    say(f"the client key's thumbprint: {key.jkt}")
    check(body["token_type"] == "DPoP" and bound == key.jkt, "the token is not bound to the client's key")

    url = f"{public_url(resource)}/api/me"  # the htu: the API's public URL, wherever it is reached from
    me = f"{resource}/api/me"

    def call(scheme: str, proof: str | None) -> requests.Response:
        headers = {"Authorization": f"{scheme} {token}", "Connection": "close"}
        if proof is not None:
            headers["DPoP"] = proof
        return requests.get(me, headers=headers, timeout=TIMEOUT)

    show(f"curl -s -H 'Authorization: DPoP $TOKEN' -H 'DPoP: $PROOF' {me}   # a fresh proof of GET {url}")
    proof = key.proof("GET", url, token)
    answer = call("DPoP", proof)
    if key.nonce_asked(url, answer.status_code, answer.headers, None):
        say("the API asks for its nonce (DPoP-Nonce); the client signs a new proof with it")
        proof = key.proof("GET", url, token)
        answer = call("DPoP", proof)
    say(f"the client, with its key -> {answer.status_code}")
    check(answer.status_code == 200, f"/api/me answered {answer.status_code} to the bound token with its proof")

    say("Now a thief copies the token and the proof off the wire, but not the key (it never leaves the client).")
    thief = DPoPKey(ec.generate_private_key(ec.SECP256R1()))
    attempts = (
        ("the stolen token as a Bearer token", call("Bearer", None), 'error="invalid_token"'),
        ("the stolen token with the captured proof, replayed", call("DPoP", proof), 'error="invalid_dpop_proof"'),
        ("the stolen token with a proof signed by the thief's key", call("DPoP", thief.proof("GET", url, token)), ""),
    )
    for label, response, error in attempts:
        say(f"{label} -> {response.status_code}")
        say(f"  WWW-Authenticate: {challenge(response)}")
        check(response.status_code == 401, f"{label} was answered {response.status_code} (401 expected)")
        check(error in challenge(response), f"{label} was refused without {error}")
    say("why: a bound token needs the DPoP scheme and a proof; a proof's jti is accepted once, by any worker;")
    say("and a proof must be signed by the key whose thumbprint the token carries in cnf.jkt.")
    prove(
        "a DPoP-bound token is refused (401) as a bearer token, with a replayed proof and with another key's proof: "
        "a stolen copy is worth nothing without the client's private key"
    )


# -- revocation ---------------------------------------------------------------------------------


def issuer_requests(metrics: str) -> Counter[tuple[str, str]]:
    """Return the issuer's answered requests by (endpoint, status) from its Prometheus text."""
    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "jwt_split_http_requests_total":
                counts[sample.labels["endpoint"], sample.labels["status"]] += int(sample.value)
    return counts


class MetricsSource:
    """The issuer's metrics: a URL on this machine, or a command that prints them."""

    def __init__(self, url: str | None, command: str | None) -> None:
        self.url = url
        self.command = command

    def read(self) -> Counter[tuple[str, str]]:
        if self.url is not None:
            return issuer_requests(requests.get(self.url, timeout=TIMEOUT).text)
        assert self.command is not None
        done = subprocess.run(shlex.split(self.command), capture_output=True, text=True, timeout=60, check=False)
        check(done.returncode == 0, f"reading the issuer's metrics failed: {done.stderr.strip()[-300:]}")
        return issuer_requests(done.stdout)


def browser_login(issuer: str, username: str, password: str) -> requests.Session:
    """Log in at the issuer's form as a browser does; return the session holding its cookie."""
    browser = requests.Session()
    form = browser.get(f"{issuer}/login", timeout=TIMEOUT).text
    marker = 'name="csrf_token" value="'
    check(marker in form, "the issuer's login page has no form")
    csrf = form.split(marker, 1)[1].split('"', 1)[0]
    answer = browser.post(
        f"{issuer}/login",
        data={"csrf_token": csrf, "username": username, "password": password},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    check(
        answer.status_code == 200 and f"logged in as {username}" in answer.text,
        f"the issuer's login form answered {answer.status_code}",
    )
    return browser


def code_flow(
    browser: requests.Session, issuer: str, client_id: str, redirect_uri: str, audience: str, scope: str
) -> dict[str, Any]:
    """Run the authorization code flow with PKCE for one API in the logged-in browser; return the token answer."""
    verifier = secrets.token_urlsafe(48)
    challenge_ = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "resource": audience,
        "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8),
        "code_challenge": challenge_,
        "code_challenge_method": "S256",
    }
    answer = browser.get(f"{issuer}/authorize", params=params, allow_redirects=False, timeout=TIMEOUT)
    location = answer.headers.get("Location", "")
    check(location.startswith(redirect_uri + "?"), f"/authorize for {audience} answered {answer.status_code}")
    code = parse_qs(urlsplit(location).query)["code"][0]
    tokens = requests.post(
        f"{issuer}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
        },
        timeout=TIMEOUT,
    )
    check(tokens.status_code == 200, f"the code exchange for {audience} answered {tokens.status_code}")
    body: dict[str, Any] = tokens.json()
    return body


def bearer(url: str, token: str) -> requests.Response:
    """GET `url` with `token` on a fresh connection (so that each of an API's workers answers some)."""
    return requests.get(url, headers={"Authorization": f"Bearer {token}", "Connection": "close"}, timeout=TIMEOUT)


def status(url: str, token: str) -> int:
    return bearer(url, token).status_code


def watch(url: str, token: str, started: float, seen: dict[str, float]) -> None:
    """Call `url` until REVOCATION_BOUND after `started`; note the first 401 and the last 200 (seconds after).

    Runs in a thread: any other answer, or a failed request, is noted for the step to report.
    """
    while (now := time.monotonic()) - started < REVOCATION_BOUND + 0.5:
        try:
            code = status(url, token)
        except requests.RequestException:
            seen.setdefault("failed", now - started)
            return
        if code == 401:
            seen.setdefault("first_401", now - started)
        elif code == 200:
            seen["last_200"] = now - started
        else:
            seen.setdefault("other", float(code))
        time.sleep(0.02)


def revocation_step(
    urls: tuple[str, str, str],
    username: str,
    password: str,
    client_id: str,
    redirect_uri: str,
    metrics: MetricsSource,
) -> None:
    """Log in once, use both APIs, log out; time the refusals, and count what the APIs asked the issuer."""
    issuer, resource, reports = urls
    say(f"{username} logs in once in a browser (the issuer's form), and an application gets a token for each API")
    say("from that one login session (authorization code flow with PKCE, one per API: an access token has one API).")
    browser = browser_login(issuer, username, password)
    show(f"browser: POST {issuer}/login, then GET {issuer}/authorize?client_id={client_id}&resource=... twice")
    profile = code_flow(browser, issuer, client_id, redirect_uri, "jwt-split-api", "openid profile")
    report = code_flow(browser, issuer, client_id, redirect_uri, "jwt-split-reports", "reports:read")
    apis = (
        ("profile API", f"{resource}/api/me", profile["access_token"]),
        ("reports API", f"{reports}/api/caller", report["access_token"]),
    )
    for name, url, token in apis:
        claims = claims_of(token)
        say(
            f"{name} token: aud {json.dumps(claims['aud'])}, scope {claims['scope']!r}, status {json.dumps(claims['status'])}"
        )
        code = status(url, token)
        say(f"GET {url} -> {code}")
        check(code == 200, f"the {name} answered {code} to its token before the logout")

    say(f"\nThe APIs verify locally: {CALLS} calls, counting the issuer's requests meanwhile (its metrics):")
    before = metrics.read()
    calls_started = time.monotonic()
    for i in range(CALLS):
        name, url, token = apis[i % 2]
        code = status(url, token)
        check(code == 200, f"the {name} answered {code} during the calls")
        # Spread over CALLS_SECONDS at least: long enough for every API worker's once-a-second
        # re-read of the status lists to show among the issuer's requests.
        time.sleep(max(0.0, calls_started + (i + 1) * CALLS_SECONDS / CALLS - time.monotonic()))
    took = time.monotonic() - calls_started
    after = metrics.read()
    grown = {
        key: after[key] - before.get(key, 0)
        for key in after
        if after[key] > before.get(key, 0) and key[0] not in HEALTH_PROBES
    }
    for (endpoint, code_), count in sorted(grown.items()):
        say(f"  issuer {endpoint} answered {code_}: {count}")
    if not grown:
        say("  issuer: no request at all")
    per_request = sorted({endpoint for endpoint, _ in grown} - VERIFICATION_ENDPOINTS)
    asked = sum(count for (endpoint, _), count in grown.items())
    for endpoint in ("introspect.introspect", "oidc.userinfo"):
        say(f"  issuer {endpoint} during the calls: {sum(c for (e, _), c in grown.items() if e == endpoint)}")
    check(not per_request, f"the issuer was asked {per_request} while the APIs were only verifying")
    check(asked < CALLS, f"the issuer answered {asked} requests for {CALLS} API calls")
    say(
        f"{CALLS} API calls in {took:.1f} s, {asked} issuer requests: each API worker re-reads the status lists"
        " about once a second, however many calls it serves (304: the list had not changed)"
    )

    end_session = issuer_metadata(issuer)["end_session_endpoint"]
    show(f"browser: GET {end_session}?id_token_hint=$ID_TOKEN&client_id={client_id}   # the resource's Log out button")
    logout = browser.get(
        f"{issuer}/logout",
        params={"id_token_hint": profile["id_token"], "client_id": client_id},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    started = time.monotonic()
    check(logout.status_code == 200 and "logged out" in logout.text, f"the logout answered {logout.status_code}")
    say("the issuer: You have been logged out.")
    say("Both APIs are called again and again (fresh connections), timed from the logout's answer:")
    seen: dict[str, dict[str, float]] = {name: {} for name, _, _ in apis}
    watchers = [threading.Thread(target=watch, args=(url, token, started, seen[name])) for name, url, token in apis]
    for watcher in watchers:
        watcher.start()
    for watcher in watchers:
        watcher.join()
    for name, url, token in apis:
        times = seen[name]
        check("other" not in times, f"the {name} answered {times.get('other', 0):.0f} while polled")
        check("failed" not in times, f"a request to the {name} failed {times.get('failed', 0):.2f} s after the logout")
        check(
            "first_401" in times, f"the {name} still accepted its token {REVOCATION_BOUND + 0.5:g} s after the logout"
        )
        last = times.get("last_200")
        say(
            f"{name}: first 401 after {times['first_401']:.2f} s, "
            + (f"last 200 after {last:.2f} s" if last is not None else "no 200 after the logout")
        )
        check(last is None or last < REVOCATION_BOUND, f"the {name} accepted the token {last:.2f} s after the logout")
        refused = [bearer(url, token) for _ in range(PROBES)]
        count = sum(r.status_code == 401 for r in refused)
        say(f"  then {count}/{PROBES} calls on fresh connections -> 401; {challenge(refused[0])}")
        check(all(r.status_code == 401 for r in refused), f"a worker of the {name} still accepts the token")
    prove(
        f"after a logout both APIs refused its access tokens within {REVOCATION_BOUND:g} s, at every worker, "
        "while the issuer was asked only for status lists, never per request"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dpop = commands.add_parser("dpop")
    dpop.add_argument("--username", default="alice")
    dpop.add_argument("issuer")
    dpop.add_argument("resource")
    revocation = commands.add_parser("revocation")
    revocation.add_argument("--username", required=True)
    revocation.add_argument("--client-id", required=True)
    revocation.add_argument("--redirect-uri", required=True)
    source = revocation.add_mutually_exclusive_group(required=True)
    source.add_argument("--issuer-metrics")
    source.add_argument("--issuer-metrics-command")
    revocation.add_argument("issuer")
    revocation.add_argument("resource")
    revocation.add_argument("reports")
    args = parser.parse_args(argv)
    password = os.environ.get("DEMO_PASSWORD", "")
    if not password:
        parser.error("the user's password goes in DEMO_PASSWORD")
    try:
        if args.command == "dpop":
            dpop_step(args.issuer, args.resource, args.username, password)
        else:
            revocation_step(
                (args.issuer, args.resource, args.reports),
                args.username,
                password,
                args.client_id,
                args.redirect_uri,
                MetricsSource(args.issuer_metrics, args.issuer_metrics_command),
            )
    except (StepFailed, requests.RequestException) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
