"""CPU per audit append, this checkout vs an earlier commit, in the same run (interleaved rounds).

    python bench/bench_audit_append.py [--against COMMIT] [--appends 300] [--rounds 3]

Every run's start and finish is an append to the audit chain (AuditStore.record_many, on SQLite,
fsync'd): one `run` record, or two queued together. `--against` checks the commit out into a
temporary git worktree and times the same appends with its code in a subprocess; prints the
medians and the ratio (below 1.0: this checkout spends less CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(appends: int) -> dict[str, float]:
    """CPU seconds per append of one record and of two, on a fresh SQLite store (this process's code)."""
    from flotilla.audit.store import AuditStore

    store = AuditStore(f"sqlite:///{tempfile.mkdtemp(prefix='flotilla-append-')}/audit.sqlite")
    for _ in range(20):  # warm: statement caches, the summaries table
        store.record("run", {"event": "started", "workflow": "w"}, run_id=uuid.uuid4().hex)
    ids = [uuid.uuid4().hex for _ in range(appends)]
    started = time.process_time()
    for run_id in ids:
        store.record("run", {"event": "started", "workflow": "document_triage", "status": "running"}, run_id=run_id)
    one = (time.process_time() - started) / appends
    started = time.process_time()
    for run_id in ids:
        store.record_many([("run", {"event": "finished", "status": "succeeded"}, run_id), ("run", {"event": "note"}, run_id)])
    two = (time.process_time() - started) / appends
    assert store.verify().ok
    return {"one record": one, "two records": two}


def measure_at(tree: Path, appends: int) -> dict[str, float]:
    """`measure` with the code of the checkout at `tree` (imported as `flotilla` through a link)."""
    link = Path(tempfile.mkdtemp(prefix="flotilla-link-"))
    (link / "flotilla").symlink_to(tree)
    code = f"import sys; sys.path[:0] = [{str(link)!r}, {str(ROOT / 'bench')!r}]; import bench_audit_append as b, json; print(json.dumps(b.measure({appends})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=link)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD~1")
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flotilla-against-") as tmp:
        old = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), args.against], check=True)
        try:
            new_runs, old_runs = [], []
            for _ in range(args.rounds):
                new_runs.append(measure_at(ROOT, args.appends))
                old_runs.append(measure_at(old, args.appends))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=True)
    print(f"audit append CPU on SQLite, medians of {args.rounds} interleaved rounds of {args.appends} appends")
    for kind in new_runs[0]:
        new = statistics.median(r[kind] for r in new_runs)
        old = statistics.median(r[kind] for r in old_runs)
        print(f"  {kind:12s} this checkout {new * 1e3:.3f} ms, {args.against} {old * 1e3:.3f} ms: {new / old:.2f}x")


if __name__ == "__main__":
    main()
