"""Drive known traffic at the observability overlay and plot what its Prometheus recorded (docs/img).

    make observe
    .venv/bin/python scripts/observability_plot.py [--out docs/img/observability.png]

About three minutes of traffic against the stack's published ports (127.0.0.1: issuer 8000,
resource 8001, Prometheus 9090; ISSUER_PORT, RESOURCE_PORT and PROMETHEUS_PORT as for compose):
users refreshing their tokens and calling the API, a burst of forged tokens, a password-guessing
burst that the rate limit stops, and one refresh token presented again after the reuse grace. Then one PNG of three
panels from Prometheus' query_range: tokens issued by grant, API verifications by result and
reason, failed logins and rate-limited requests, with the refresh-reuse alert shaded.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from matplotlib.figure import Figure

ISSUER = f"http://127.0.0.1:{os.environ.get('ISSUER_PORT', '8000')}"
RESOURCE = f"http://127.0.0.1:{os.environ.get('RESOURCE_PORT', '8001')}"
PROMETHEUS = f"http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '9090')}"
PUBLIC_ISSUER = f"http://localhost:{os.environ.get('ISSUER_PORT', '8000')}"
OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "observability.png"
STEP = 5  # seconds: Prometheus' scrape interval in the overlay
WINDOW = "20s"  # the rate() window
REUSE_AFTER = 35.0  # seconds: past the issuer's default ISSUER_REFRESH_REUSE_GRACE


def token(**form: str) -> dict[str, Any]:
    """Return the issuer's answer to a token request (200 expected)."""
    response = requests.post(f"{ISSUER}/token", data=form, timeout=10)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def forger() -> Callable[[], str]:
    """Return a function making tokens that name the issuer's key but are signed with another."""
    kid = requests.get(f"{ISSUER}/.well-known/jwks.json", timeout=10).json()["keys"][0]["kid"]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": PUBLIC_ISSUER, "sub": "alice", "aud": "jwt-split-api", "iat": now, "exp": now + 3600}
    forged = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})
    return lambda: forged


def warm_up() -> None:
    """Count each kind of event once, before the plot: a series' first sample has no rate."""
    session = token(grant_type="password", username="alice", password="wonderland")
    token(grant_type="refresh_token", refresh_token=session["refresh_token"])
    for bearer in (session["access_token"], forger()(), "not-a-jwt"):
        requests.get(f"{RESOURCE}/api/me", headers={"Authorization": f"Bearer {bearer}"}, timeout=10)
    # One keep-alive connection, so one worker (each counts its limits in memory) sees all six:
    # the sixth is refused by the per-account limit (5 a minute by default).
    with requests.Session() as guesser:
        for _ in range(6):
            form = {"grant_type": "password", "username": "mallory", "password": "guess"}
            guesser.post(f"{ISSUER}/token", data=form, timeout=10)


def traffic(seconds: float) -> None:
    """Drive the traffic for `seconds`."""
    sessions = {
        user: token(grant_type="password", username=user, password=password)
        for user, password in (("alice", "wonderland"), ("bob", "builder"))
    }
    forged = forger()
    started = time.time()
    spent = ""
    spent_at = 0.0
    tick = 0
    while (elapsed := time.time() - started) < seconds:
        tick += 1
        # Each user refreshes once a second and calls the API ten times a second.
        for user, session in sessions.items():
            if tick % 2 == 0:
                sessions[user] = session = token(grant_type="refresh_token", refresh_token=session["refresh_token"])
            for _ in range(5):
                requests.get(
                    f"{RESOURCE}/api/me", headers={"Authorization": f"Bearer {session['access_token']}"}, timeout=10
                )
        if 0.25 * seconds < elapsed < 0.45 * seconds:  # forged and garbled tokens
            for bad in (forged(), forged(), "not-a-jwt"):
                requests.get(f"{RESOURCE}/api/me", headers={"Authorization": f"Bearer {bad}"}, timeout=10)
        if 0.5 * seconds < elapsed < 0.62 * seconds:  # someone guessing passwords
            for _ in range(2):
                requests.post(
                    f"{ISSUER}/token",
                    timeout=10,
                    data={"grant_type": "password", "username": "bob", "password": secrets.token_hex(4)},
                )
        # A refresh token presented again after the reuse grace (30 s by default): the issuer
        # revokes alice's family.
        if not spent and elapsed > 0.62 * seconds:
            spent, spent_at = sessions["alice"]["refresh_token"], time.time()
        if spent and "alice" in sessions and time.time() > spent_at + REUSE_AFTER:
            requests.post(f"{ISSUER}/token", data={"grant_type": "refresh_token", "refresh_token": spent}, timeout=10)
            del sessions["alice"]
        time.sleep(max(0.0, started + tick * 0.5 - time.time()))


def query_range(expr: str, start: float, end: float) -> list[dict[str, Any]]:
    """Return the series of a range query."""
    response = requests.get(
        f"{PROMETHEUS}/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": STEP}, timeout=30
    )
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def panel(axis: Any, expr: str, label: Callable[[dict[str, str]], str], start: float, end: float, title: str) -> None:
    """Plot every series of `expr` on `axis`, in seconds since `start`."""
    for series in sorted(query_range(expr, start, end), key=lambda s: label(s["metric"])):
        points = [(float(t) - start, float(v)) for t, v in series["values"]]
        if any(v for _, v in points):  # a series that stayed at zero is clutter
            axis.plot([t for t, _ in points], [v for _, v in points], label=label(series["metric"]), linewidth=1.6)
    axis.set_title(title, fontsize=10, loc="left")
    axis.set_ylabel("per second", fontsize=9)
    axis.grid(alpha=0.3)


def plot(start: float, end: float, out: Path) -> None:
    """Write the three panels for [start, end] to `out`."""
    figure = Figure(figsize=(8, 7.2), dpi=80)
    axes = figure.subplots(3, 1, sharex=True)
    panel(
        axes[0],
        f"sum by (grant) (rate(jwt_split_tokens_issued_total[{WINDOW}]))",
        lambda m: m.get("grant", "?"),
        start,
        end,
        "Access tokens issued, by grant (issuer)",
    )
    panel(
        axes[1],
        f'sum by (result, reason) (rate(jwt_split_token_verifications_total{{job="resource"}}[{WINDOW}]))',
        lambda m: m.get("result", "?") if m.get("reason") == "none" else f"{m.get('result')}: {m.get('reason')}",
        start,
        end,
        "Token verifications, by result and reason (resource API)",
    )
    failed = f'sum(rate(jwt_split_logins_total{{result="failure"}}[{WINDOW}]))'
    limited = f"sum(rate(jwt_split_rate_limited_total[{WINDOW}]))"
    panel(
        axes[2],
        f'label_replace({failed}, "what", "failed logins", "", "")'
        f' or label_replace({limited}, "what", "refused by the rate limit (429)", "", "")',
        lambda m: m.get("what", "?"),
        start,
        end,
        "Failed logins and login attempts refused by the rate limit (issuer)",
    )
    for axis in axes:
        axis.set_ylim(bottom=0, top=axis.get_ylim()[1] * 1.3)  # room for the legend
        axis.legend(fontsize=8, loc="upper left", ncol=3, frameon=False)
    firing = query_range('ALERTS{alertname="JwtSplitRefreshTokenReuse",alertstate="firing"}', start, end)
    for series in firing:
        times = [float(t) - start for t, _ in series["values"]]
        for axis in axes:
            axis.axvspan(min(times), max(times), color="tab:red", alpha=0.12)
        axes[0].text(
            min(times),
            axes[0].get_ylim()[1] * 0.8,
            " alert firing:\n JwtSplitRefreshTokenReuse",
            color="tab:red",
            fontsize=8,
            va="top",
        )
    axes[2].set_xlabel("seconds into the run (Prometheus query_range, 5 s steps, 20 s rate windows)", fontsize=9)
    figure.suptitle("jwt-split under known traffic (make observe)", fontsize=11)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)


def main() -> None:
    """Drive the traffic, wait for the last scrape and alert evaluation, write the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args()
    requests.get(f"{PROMETHEUS}/-/ready", timeout=10).raise_for_status()
    if query_range('ALERTS{alertstate="firing"}', time.time() - 5, time.time()):
        # Its shading would cover the whole plot: an alert stays firing for 15 minutes.
        raise SystemExit("an alert is firing already: start a fresh overlay (make observe-down, remove its volumes)")
    warm_up()
    time.sleep(30)  # scraped, and out of the rate windows of the plot
    start = time.time() - 10
    traffic(args.seconds)
    time.sleep(45)  # the tail of the run: scraped, rates back to zero, the alert evaluated
    plot(start, time.time(), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
