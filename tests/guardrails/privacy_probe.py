"""Runs the whole rails stack with every non-loopback connection made to fail loudly.

Executed as a fresh interpreter by test_privacy.py, so imports and model loads happen under the
guard too. The guard is installed before anything else is imported. Any attempt is recorded and
raised; the probe prints the attempts (JSON) and exits 1 if there were any.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys

ATTEMPTS: list[str] = []
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_loopback(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host)
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _guard(what: str, host: object) -> None:
    if not _is_loopback(host):
        ATTEMPTS.append(f"{what}({host!r})")
        raise OSError(f"privacy guard: non-loopback network access attempted: {what}({host!r})")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def connect(self, address):  # noqa: ANN001
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _guard("connect", address[0])
    return _connect(self, address)


def connect_ex(self, address):  # noqa: ANN001
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _guard("connect_ex", address[0])
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001
    _guard("getaddrinfo", host)
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo


def main(workdir: str) -> int:
    import asyncio
    from pathlib import Path

    from flotilla.agents.models.base import ChatRequest
    from flotilla.agents.models.testing import FunctionModel
    from flotilla.guardrails import Guardrails, GuardrailViolation, RailPoint
    from tests.guardrails.tiny_llama_guard import build_tiny_llama_guard

    weights = build_tiny_llama_guard(Path(workdir) / "llama-guard")
    every_point = [p.value for p in RailPoint]
    config = {
        "presidio": {"points": every_point},
        "yara": {"points": every_point},
        "injection_classifier": {"points": every_point},
        # Content safety decides at its points (an empty Llama Guard band); Llama Guard runs at the rest.
        "content_safety": {"points": ["input", "agent-output"], "llama_guard_band": [0.0, 0.0001]},
        "tool_screen": {"points": ["tool-result"]},
        "nemo": {"enabled": True, "points": ["input", "agent-output", "output"]},
        "llama_guard": {"weights": str(weights), "on_unparseable": "allow", "points": every_point},
    }

    def judge(request: ChatRequest) -> str:
        return "No"

    rails = Guardrails(config, model_resolver=lambda alias: FunctionModel(judge))
    text = "Invoice INV-7 from ann@acme-corp.com, IBAN DE89370400440532013000; please summarise it."
    outcomes = {}

    async def run() -> None:
        for point in RailPoint:
            try:
                report = await rails.report(point, text, workflow="privacy")
                outcomes[point.value] = [v.engine for v in report.verdicts if v.enabled]
            except GuardrailViolation as exc:  # pragma: no cover - report() never raises on a block
                outcomes[point.value] = str(exc)

    asyncio.run(run())
    print(json.dumps({"attempts": ATTEMPTS, "engines": outcomes}))
    return 1 if ATTEMPTS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
