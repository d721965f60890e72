"""HTTP load from wrk, a separate process, against 127.0.0.1 only."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

WRK_SCRIPTS = Path(__file__).parent / "wrk"
CONNECTIONS = 32


@dataclass(frozen=True)
class LoadResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    rps: float
    errors: int
    p50_ms: float
    p99_ms: float


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    url: str,
    *,
    seconds: float,
    script: str | None = None,
    script_args: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
    connections: int = CONNECTIONS,
) -> LoadResult:
    """Run wrk (one thread, `connections` keep-alive connections) and parse its summary."""
    if urlsplit(url).hostname != "127.0.0.1":
        raise ValueError("the bench sends load to 127.0.0.1 only")
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (scripts/bench-setup installs it)")
    command = [binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(WRK_SCRIPTS / script)]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", out)
    if total is None:
        raise RuntimeError(f"cannot read wrk's summary:\n{out}")
    requests_done = int(total.group(1))
    elapsed = float(total.group(2)) / (1000 if total.group(3) == "ms" else 1)
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    p50 = re.search(r"^\s*50%\s+(\S+)\s*$", out, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+(\S+)\s*$", out, re.MULTILINE)
    return LoadResult(
        requests=requests_done,
        seconds=elapsed,
        rps=requests_done / elapsed if elapsed else 0.0,
        errors=errors,
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_ms(p99.group(1)) if p99 else float("nan"),
    )
