"""`python -m flotilla.mcp_servers.ledger [--db PATH] [--rebuild] [--writable]`: serve the ledger over stdio.

Without --db the seed data is loaded into a private database in a temp directory, so the
server never writes into the repository. `--writable` adds `record_decision` (writes honour
idempotency keys, kept in the same database: give --db so they outlive the process).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from flotilla.mcp_servers.ledger.db import build_database
from flotilla.mcp_servers.ledger.server import build_server


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flotilla.mcp_servers.ledger", description=__doc__)
    parser.add_argument("--db", type=Path, help="SQLite file (built from the seed data if missing)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild --db from the seed data first")
    parser.add_argument("--writable", action="store_true", help="add the write tools (record_decision), which honour idempotency keys")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flotilla-ledger-") as tmp:
        db = args.db or Path(tmp) / "ledger.sqlite"
        if args.rebuild or not db.exists():
            build_database(db)
        build_server(db, writable=args.writable).run("stdio")


if __name__ == "__main__":
    main()
