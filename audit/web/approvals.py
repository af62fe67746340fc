"""Approvals on the audit page: the approver role, separate from the read-only compliance role.

An approver signs in with their run-API token that has the `approve` scope (runtime/api_auth.py);
the compliance token never shows or accepts the Approve / Reject buttons. An approver sees the
run pages (what they decide on), not the trail's lists or exports. The buttons post a form to
the audit app, which calls the run backend's `decide` under the approver's token name — the same
path as `POST /v1/runs/{id}/approve` — so the decision lands in the audit chain as every other.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Approvals", "APPROVER_COOKIE"]

APPROVER_COOKIE = "flotilla_approver"


@dataclass(frozen=True)
class Approvals:
    approvers: Mapping[str, str]
    """Secret → name of every token with the `approve` scope."""
    pending: Callable[[str], dict[str, Any] | None]
    """The approval request a run waits for, or None (not waiting, unknown)."""
    decide: Callable[[str, str, str, str], Awaitable[Any]]
    """(run_id, `approve` | `reject`, approver name, reason): the backend's decision; raises its typed errors."""

    def session(self, secret: str) -> str:
        """The approver cookie's value: a digest of the token, never the token."""
        return hashlib.sha256(f"flotilla-audit-approver:{secret}".encode()).hexdigest()

    def by_token(self, presented: str) -> str | None:
        return _match(presented, self.approvers.items())

    def by_session(self, cookie: str) -> str | None:
        return _match(cookie, ((self.session(secret), name) for secret, name in self.approvers.items()))


def _match(presented: str, candidates: Any) -> str | None:
    """Every candidate is compared in constant time (no early exit on a match)."""
    found = None
    for secret, name in candidates:
        if presented and hmac.compare_digest(presented.encode(), secret.encode()):
            found = name
    return found
