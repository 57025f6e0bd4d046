"""py-spy on a server under load: where its time goes, and how much of it the
process spends holding the GIL.

Two recordings, one after the other, while the load runs: `--gil` (only samples
taken while a thread holds the GIL: their share of all samples is the GIL's
busy fraction) and `--idle --threads` (every thread, waiting or not; the
summary keeps the main thread, the event loop's, whose time in the loop's C
code is then mostly waiting in epoll for the network and PostgreSQL). Each is
kept as py-spy's raw collapsed stacks, and summarized: the samples by the
package of the innermost Python frame, the functions most often innermost
(self), and the project's functions most often anywhere in the stack (total).
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.wrk import WrkResult

RATE = 200  # samples per second


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv/bin/py-spy")
    if not Path(found).exists():
        raise RuntimeError("py-spy is missing: .venv/bin/pip install py-spy")
    return found


def record(pid: int, output: Path, seconds: float, *flags: str) -> None:
    subprocess.run(
        [
            _py_spy(),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(RATE),
            "--format",
            "raw",
            "--function",
            "--nonblocking",
            "--output",
            str(output),
            *flags,
        ],
        check=True,
        capture_output=True,
    )


def record_command(argv: list[str], env: dict[str, str], output: Path) -> dict[str, Any]:
    """Run a command under py-spy (every sample of its main thread, idle or not)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            _py_spy(),
            "record",
            "--rate",
            str(RATE),
            "--format",
            "raw",
            "--function",
            "--nonblocking",
            "--idle",
            "--threads",
            "--output",
            str(output),
            "--",
            *argv,
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    return summarize(output, expected=None, only_thread="MainThread")


def record_under(
    pid: int, folder: Path, seconds: float, load: Callable[[], WrkResult]
) -> dict[str, Any]:
    """Run `load` (for about `seconds`) and record two profiles of `pid` meanwhile."""
    folder.mkdir(parents=True, exist_ok=True)
    outcome: dict[str, WrkResult] = {}
    runner = threading.Thread(target=lambda: outcome.update(load=load()), daemon=True)
    runner.start()
    half = max(1.0, (seconds - 1) / 2)
    gil, idle = folder / "gil.txt", folder / "threads-idle.txt"
    record(pid, gil, half, "--gil", "--threads")
    record(pid, idle, half, "--idle", "--threads")
    runner.join()
    loaded = outcome.get("load")
    return {
        "folder": str(folder),
        "load_under_profiler": loaded.as_dict() if loaded is not None else None,
        "gil": summarize(gil, expected=RATE * round(half)),
        "main_thread_idle": summarize(idle, expected=None, only_thread="MainThread"),
    }


#: The project's own packages.
PROJECT = ("api", "ledger", "projections", "bench")
#: Frames under which everything runs: no news in a "total" column.
_ENTRY_POINTS = ("<module> (", "main (api/cli.py", "serve (api/cli.py", "main (bench/")


def _frames(stack: str) -> list[str]:
    return [frame for frame in stack.split(";") if frame]


def layer(frame: str) -> str:
    """What a frame belongs to: the project, a library, or the event loop itself
    (uvloop runs in C; its time shows under asyncio's `Runner.run`)."""
    if frame.startswith("Runner.run (asyncio/runners.py"):
        return "event loop (uvloop, C: epoll, socket reads and writes)"
    _, _, where = frame.rpartition(" (")
    package = where.split("/", 1)[0].split(":", 1)[0].removesuffix(".py")
    if package in PROJECT:
        return f"{package} (this project)"
    return package


def summarize(
    path: Path, *, expected: int | None, only_thread: str | None = None, top: int = 25
) -> dict[str, Any]:
    """Sample counts from a raw py-spy file: per thread, per function on top of
    the stack (self) and per function anywhere in it (total)."""
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if only_thread is not None and not (frames and frames[0].endswith(f": {only_thread}")):
            continue
        samples += count
        if frames and frames[0].startswith("thread ("):
            threads[frames[0]] += count
            frames = frames[1:]
        if frames:
            own[frames[-1]] += count
            layers[layer(frames[-1])] += count
        for frame in set(frames):
            if layer(frame).endswith("(this project)") and not frame.startswith(_ENTRY_POINTS):
                total[frame] += count

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / samples, 1)) for name, n in counter.most_common(top)]

    return {
        "samples": samples,
        "expected_samples": expected,
        "busy_percent": round(100 * samples / expected, 1) if expected else None,
        "threads": share(threads),
        "layers_percent": share(layers),
        "self_percent": share(own),
        "total_percent": share(total),
    }


def render(summary: dict[str, Any], title: str, top: int = 15) -> str:
    lines = [f"### {title}", ""]
    if summary.get("busy_percent") is not None:
        lines.append(
            f"{summary['samples']} samples holding the GIL of {summary['expected_samples']} "
            f"taken: the GIL was held {summary['busy_percent']}% of the time."
        )
    else:
        lines.append(f"{summary['samples']} samples.")
    lines.append("")
    lines.append("threads: " + ", ".join(f"{n} {p}%" for n, p in summary["threads"]))
    lines.append("")
    lines.append("| self % | layer (package of the innermost Python frame) |")
    lines.append("|---:|---|")
    lines.extend(f"| {p} | {name} |" for name, p in summary["layers_percent"][:top])
    lines.append("")
    lines.append("| self % | function |")
    lines.append("|---:|---|")
    lines.extend(f"| {p} | `{name}` |" for name, p in summary["self_percent"][:top])
    lines.append("")
    lines.append("| total % | function of this project (with what it calls) |")
    lines.append("|---:|---|")
    lines.extend(f"| {p} | `{name}` |" for name, p in summary["total_percent"][:top])
    lines.append("")
    return "\n".join(lines)
