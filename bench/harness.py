"""What the benchmarks share (``bench/ingest.py``, ``bench/pipeline.py``): the
processes they start, wrk's output, the machine they run on, and how busy
other processes keep it meanwhile."""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"


@dataclass
class WrkResult:
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    latency_ms: dict[int, float] = field(default_factory=dict)  # percentile -> ms
    non2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)  # from the Lua done()
    others: float | None = None  # cores other processes used meanwhile (see OtherLoad)
    connections: int = 0  # wrk connections of the run (set where it matters)
    output: str = ""

    @property
    def socket_error_total(self) -> int:
        return sum(self.socket_errors.values())


def cpu_ticks() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU ticks used so far) for every process (Linux /proc)."""
    out: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        out[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


def process_tree(root: int, ticks: dict[int, tuple[int, int]]) -> set[int]:
    """``root`` and its descendants among ``ticks`` (from ``cpu_ticks``)."""
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _) in ticks.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


class OtherLoad:
    """How many cores processes other than this bench and its children kept
    busy during a measurement: the machine may be shared, and this says how
    much to trust a figure. Processes that start and end in between are missed.

    ``ours``, when a bench sets it, names more processes that work for the
    bench without being its children (a local PostgreSQL server's processes
    that serve the bench's database)."""

    ours: Callable[[], set[int]] | None = None

    def __init__(self) -> None:
        self._start = cpu_ticks() if Path("/proc/self/stat").exists() else {}
        self._t0 = time.monotonic()

    def cores(self) -> float | None:
        if not self._start:
            return None
        # ours first: a process of ours that ends meanwhile is then either in
        # both or gone from the end snapshot too
        ours = OtherLoad.ours() if OtherLoad.ours is not None else set()
        end = cpu_ticks()
        elapsed = time.monotonic() - self._t0
        mine = process_tree(os.getpid(), end)
        used = 0
        for pid, (_, ticks) in end.items():
            if pid not in mine and pid not in ours:
                used += ticks - self._start.get(pid, (0, 0))[1]
        return max(used, 0) / os.sysconf("SC_CLK_TCK") / max(elapsed, 1e-9)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0:
        sys.exit(
            "bench/ingest.py needs wrk, which is not installed. Install it with "
            "`sudo apt-get install -y wrk` (Debian/Ubuntu; `brew install wrk` on macOS), "
            "then run the bench again."
        )
    log("wrk is missing; installing it with apt-get (running as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            sys.exit(f"could not install wrk with apt-get:\n{done.stderr[-2000:]}")
    found = shutil.which("wrk")
    if not found:
        sys.exit("apt-get reported success but wrk is still not on PATH")
    return found


def wait_http(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited early:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f}s")


def serve_command(port: int, database_url: str, *extra: str) -> list[str]:
    """``python -m tally serve`` on HOST:port and the database."""
    return [
        sys.executable,
        "-m",
        "tally",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--database-url",
        database_url,
        *extra,
    ]


def start_process(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop one process this bench started (by its own handle, nothing else)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(output: str) -> WrkResult:
    res = WrkResult(output=output)
    if m := re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output):
        res.requests = int(m.group(1))
        res.seconds = float(m.group(2)) * _UNITS_MS[m.group(3)] / 1000.0
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        res.rps = float(m.group(1))
    block = output.split("Latency Distribution", 1)
    if len(block) == 2:
        for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", block[1], re.MULTILINE):
            res.latency_ms[int(m.group(1))] = float(m.group(2)) * _UNITS_MS[m.group(3)]
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        res.non2xx = int(m.group(1))
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        res.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    if m := re.search(r"BENCH-COUNTERS (.*)", output):
        res.counters = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}
    return res


def machine_line() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = ""
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        wrk_version = (out.stdout + out.stderr).split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"nproc {nproc} ({model or platform.machine()}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, SQLite "
        f"{sqlite3.sqlite_version}, wrk {wrk_version or '?'}"
    )
