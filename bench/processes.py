"""Servers the bench starts: each in a child process on a free port of
127.0.0.1, stopped (with every process it started) when the scenario ends,
whatever happened."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.databases import ROOT
from ledger.db import Database

API_KEY = "bench-service-key"
ADMIN_KEY = "bench-admin-key"
API_KEYS = f"service:{API_KEY},admin:{ADMIN_KEY}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def python_env(**extra: str) -> dict[str, str]:
    """The environment of a child: ours, with src/ and the repository on the path."""
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    previous = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": f"{path}{os.pathsep}{previous}" if previous else path}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Finished:
    """A child run to its end: its exit code, output, and what it used."""

    returncode: int
    output: str
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float


def run_measured(argv: Sequence[str], env: dict[str, str] | None = None) -> Finished:
    """Run `argv` to its end (killed if we are interrupted), its output (stdout
    and stderr) kept, its own CPU time and peak memory measured."""
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        process = subprocess.Popen(
            list(argv), env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        seconds = time.monotonic() - started
        out.seek(0)
        output = out.read().decode(errors="replace")
    return Finished(
        os.waitstatus_to_exitcode(status),
        output,
        seconds,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
    )


@dataclass
class Served:
    """An HTTP server in a child process (and its own children)."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    _children: list[psutil.Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        handle, path = tempfile.mkstemp(prefix=f"bench-{self.name}-", suffix=".log")
        self.log = Path(path)
        with os.fdopen(handle, "wb") as out:
            self.process = subprocess.Popen(
                list(self.argv),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)
        with contextlib.suppress(psutil.Error):
            self._children = psutil.Process(self.pid).children(recursive=True)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL for whatever is left of it and its children."""
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(psutil.Error):
                self._children = [
                    *self._children,
                    *psutil.Process(process.pid).children(recursive=True),
                ]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for child in self._children:
            with contextlib.suppress(psutil.Error):
                child.wait(5)
            with contextlib.suppress(psutil.Error):
                child.kill()
        self._children = []
        if self.log is not None:
            self.log.unlink(missing_ok=True)
            self.log = None


@contextlib.contextmanager
def serving(served: Served) -> Iterator[Served]:
    try:
        served.start()
        yield served
    finally:
        served.stop()


def ledger_server(database: Database) -> Served:
    """`ledger serve`, one worker, as a user runs it (API process plus projector)."""
    port = free_port()
    env = python_env(
        LEDGER_DATABASE_URL=database.url,
        LEDGER_API_KEYS=API_KEYS,
        LEDGER_LOG_LEVEL="warning",
    )
    argv = [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "1"]
    return Served("ledger", argv, env, port)


def baseline_server(name: str, database: Database) -> Served:
    """A baseline app of bench/baselines.py, served by uvicorn the same way."""
    port = free_port()
    env = python_env(BENCH_DATABASE_URL=database.url, BENCH_API_KEY=API_KEY)
    argv = [sys.executable, "-m", "bench.baselines", name, "--port", str(port)]
    return Served(name, argv, env, port)
