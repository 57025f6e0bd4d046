"""Closed-loop HTTP load with wrk: a Lua script that spends one credit of a
random user (or of the one hot user) per request, and reports its numbers as
one JSON line."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.processes import run_measured

THREADS = 2
CONNECTIONS = 64
MARK = _MARK = "BENCH_RESULT "

_SCRIPT = """
local users = %(users)d
local prefix = "%(prefix)s"
local digits = "%(digits)d"
local body = '{"amount":1,"reason":"bench"}'
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer %(key)s",
}
local next_thread = 0
local fixed = nil

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_number", next_thread)
end

function init(args)
  math.randomseed(%(seed)d + 7919 * (thread_number or 0))
  if users == 1 then
    fixed = wrk.format("POST", "/v1/users/" .. prefix .. "/credits/spends", headers, body)
  end
end

function request()
  if fixed then
    return fixed
  end
  local path = string.format(
    "/v1/users/%%s%%0" .. digits .. "d/credits/spends", prefix, math.random(0, users - 1))
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests":%%d,"duration_us":%%d,"connect_errors":%%d,"read_errors":%%d,' ..
    '"write_errors":%%d,"status_errors":%%d,"timeouts":%%d,"p50_us":%%d,"p90_us":%%d,' ..
    '"p99_us":%%d,"mean_us":%%.1f,"max_us":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class Load:
    """Who the requests spend for: `users` users named prefix + `digits`
    digits, or, with one user, the user named `prefix`."""

    users: int
    prefix: str
    digits: int = 5


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    wrk_cpu_seconds: float
    #: What a script counted itself (replies settled, say).
    counted: int = 0

    @property
    def ok_per_second(self) -> float:
        """Successful spends (2xx) per second."""
        return (self.requests - self.non_2xx) / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        numbers = asdict(self)
        numbers["wrk_cpu_cores"] = round(numbers.pop("wrk_cpu_seconds") / self.seconds, 3)
        return {**numbers, "spends_per_second": round(self.ok_per_second, 1)}


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: apt-get install -y wrk", flush=True)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and could not be installed")
    return found


def script(load: Load, key: str, seed: int = 1) -> str:
    return _SCRIPT % {
        "users": load.users,
        "prefix": load.prefix,
        "digits": load.digits,
        "key": key,
        "seed": seed,
        "mark": _MARK,
    }


def run(
    url: str, load: Load, key: str, seconds: float, *, seed: int = 1, lua: str | None = None
) -> WrkResult:
    """wrk -t2 -c64 for `seconds` against `url`: spends, or what the `lua`
    script sends (one that ends with the same result line)."""
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as folder:
        path = Path(folder) / "load.lua"
        path.write_text(lua if lua is not None else script(load, key, seed))
        finished = run_measured(
            [
                wrk,
                f"-t{THREADS}",
                f"-c{CONNECTIONS}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(path),
                url,
            ],
            {**os.environ, "LC_ALL": "C"},
        )
    output = finished.output
    for line in output.splitlines():
        if line.startswith(_MARK):
            raw = orjson.loads(line.removeprefix(_MARK))
            return WrkResult(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                non_2xx=raw["status_errors"],
                socket_errors=raw["connect_errors"]
                + raw["read_errors"]
                + raw["write_errors"]
                + raw["timeouts"],
                p50_ms=raw["p50_us"] / 1000,
                p90_ms=raw["p90_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                mean_ms=raw["mean_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
                wrk_cpu_seconds=finished.cpu_seconds,
                counted=raw.get("counted", 0),
            )
    raise RuntimeError(f"wrk failed ({finished.returncode}):\n{output}")
