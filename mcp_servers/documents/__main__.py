"""`python -m flotilla.mcp_servers.documents [--root DIR]`: serve a folder of documents over stdio."""

from __future__ import annotations

import argparse
from pathlib import Path

from flotilla.mcp_servers.documents.server import DEFAULT_ROOT, build_server


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flotilla.mcp_servers.documents", description=__doc__)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder of .md/.txt documents (default: the bundled corpus)")
    build_server(parser.parse_args().root).run("stdio")


if __name__ == "__main__":
    main()
