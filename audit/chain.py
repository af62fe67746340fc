"""The hash chain: canonical form of a record, its SHA-256 link, HMAC-signed heads, and verify.

Each record's hash covers its sequence number, kind, run id, time, payload (canonical JSON)
and the hash of its predecessor, so editing, deleting, inserting or reordering any record
breaks a link. The chain head (last seq + hash) is signed with an HMAC key held outside the
store: without the key nobody can re-sign a truncated or rewritten chain. Pure functions,
no database, so the same code checks SQLite, Postgres and exported files.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterable
from json.encoder import encode_basestring as _encode_string
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "GENESIS",
    "ChainRecord",
    "SignedMark",
    "VerifyReport",
    "canonical_json",
    "record_hash",
    "sign_mark",
    "verify_chain",
]

GENESIS = "0" * 64
"""The predecessor hash of the very first record."""


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, UTF-8 as is; NaN and infinities become strings."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:  # a non-finite float somewhere (e.g. a score): JSON has no spelling for it
        return canonical_json(_finite(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def record_hash(seq: int, kind: str, run_id: str | None, recorded_at: str, payload: str, prev_hash: str) -> str:
    """SHA-256 of the record's canonical form. `payload` is already canonical JSON text."""
    # canonical_json({"kind", "prev", "recorded_at", "run_id", "seq"}) with the payload text
    # appended as a last member, spelled out by hand: this runs once per record on ingest and
    # verify, and never re-parses the payload.
    material = (
        '{"kind":' + _q(kind)
        + ',"prev":' + _q(prev_hash)
        + ',"recorded_at":' + _q(recorded_at)
        + ',"run_id":' + ("null" if run_id is None else _q(run_id))
        + ',"seq":' + str(int(seq))
        + ',"payload":' + payload + "}"
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _q(value: str) -> str:
    # what json.dumps(value, ensure_ascii=False) returns for a string, without its per-call set-up
    return _encode_string(value if isinstance(value, str) else str(value))


class ChainRecord(NamedTuple):
    """One record as the chain sees it (a plain tuple, so verify can stream database rows fast)."""

    seq: int
    kind: str
    run_id: str | None
    recorded_at: str
    payload: str
    prev_hash: str
    hash: str

    def recompute(self) -> str:
        return record_hash(self.seq, self.kind, self.run_id, self.recorded_at, self.payload, self.prev_hash)


@dataclass(frozen=True, slots=True)
class SignedMark:
    """A signed point in the chain: the head (last record) or a prune anchor (last pruned record)."""

    role: str
    """`head` or `anchor`."""
    seq: int
    hash: str
    recorded_at: str
    signature: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Anchor details (records pruned, cut-off date); part of what is signed."""

    def message(self) -> bytes:
        body = {"role": self.role, "seq": self.seq, "hash": self.hash, "recorded_at": self.recorded_at, **self.extra}
        return canonical_json(body).encode("utf-8")

    def valid(self, key: bytes) -> bool:
        if self.signature is None:
            return False
        expected = hmac.new(key, self.message(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.signature)

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "seq": self.seq,
            "hash": self.hash,
            "recorded_at": self.recorded_at,
            "signature": self.signature,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SignedMark:
        return cls(
            role=str(data["role"]),
            seq=int(data["seq"]),
            hash=str(data["hash"]),
            recorded_at=str(data["recorded_at"]),
            signature=data.get("signature"),
            extra=dict(data.get("extra") or {}),
        )


def sign_mark(mark: SignedMark, key: bytes | None) -> SignedMark:
    if key is None:
        return mark
    signature = hmac.new(key, mark.message(), hashlib.sha256).hexdigest()
    return SignedMark(mark.role, mark.seq, mark.hash, mark.recorded_at, signature, mark.extra)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    checked: int
    """Records whose links were checked."""
    first_seq: int | None
    last_seq: int | None
    broken_seq: int | None = None
    """The first record (by sequence number) where the chain breaks."""
    reason: str = ""
    signed: bool = False
    """True when the head (and anchor, if any) carried a valid HMAC signature."""
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "broken_seq": self.broken_seq,
            "reason": self.reason,
            "signed": self.signed,
            "warnings": list(self.warnings),
        }


def verify_chain(
    records: Iterable[Any],
    *,
    head: SignedMark | None,
    anchor: SignedMark | None = None,
    key: bytes | None = None,
    pinned: SignedMark | None = None,
    after: tuple[int, str] | None = None,
) -> VerifyReport:
    """Walk the records in seq order and report the first broken link.

    `records` are ChainRecords or tuples in the same field order (database rows).

    `anchor` is the signed checkpoint left by the last prune (the chain resumes after it);
    `head` the signed head kept by the store; `pinned` an exported head kept elsewhere,
    which the chain must still contain. `after=(seq, hash)` checks only the records after a
    point an earlier full verify already vouched for (`records` must start there too).
    """
    warnings: list[str] = []
    signed = key is not None
    if key is None:
        warnings.append("no HMAC key configured: head and anchor signatures not checked, so a rewritten tail is not detectable")
    if anchor is not None and key is not None and not anchor.valid(key):
        return VerifyReport(False, 0, None, None, anchor.seq, f"prune checkpoint at record {anchor.seq} has a bad signature", signed, tuple(warnings))
    if head is not None and key is not None and not head.valid(key):
        return VerifyReport(False, 0, None, None, head.seq, f"chain head (record {head.seq}) has a bad signature", signed, tuple(warnings))
    if pinned is not None and key is not None and not pinned.valid(key):
        return VerifyReport(False, 0, None, None, pinned.seq, f"the exported head (record {pinned.seq}) has a bad signature", signed, tuple(warnings))

    expected_seq = anchor.seq + 1 if anchor is not None else 1
    expected_prev = anchor.hash if anchor is not None else GENESIS
    if after is not None:
        expected_seq, expected_prev = after[0] + 1, after[1]
    first: int | None = None
    last: int | None = None
    last_hash = expected_prev
    checked = 0
    pinned_seen = pinned is None

    def broken(seq: int, reason: str) -> VerifyReport:
        return VerifyReport(False, checked, first, last, seq, reason, signed, tuple(warnings))

    for seq, kind, run_id, recorded_at, payload, prev_hash, digest in records:
        if first is None:
            first = seq
        if seq != expected_seq:
            if isinstance(seq, int) and seq > expected_seq:
                gap = "deleted" if expected_seq == seq - 1 else f"{expected_seq}..{seq - 1} deleted"
                return broken(expected_seq, f"record {expected_seq} is missing ({gap}); next present is {seq}")
            return broken(expected_seq, f"record {seq} is out of order (expected {expected_seq})")
        if prev_hash != expected_prev:
            return broken(seq, f"record {seq} does not link to its predecessor (inserted, deleted or reordered record before it)")
        if record_hash(seq, kind, run_id, recorded_at, payload, prev_hash) != digest:
            return broken(seq, f"record {seq} was edited: its content no longer matches its hash")
        if pinned is not None and seq == pinned.seq:
            if digest != pinned.hash:
                return broken(seq, f"record {seq} differs from the exported head")
            pinned_seen = True
        expected_prev = last_hash = digest
        expected_seq += 1
        last = seq
        checked += 1

    end_seq = last if last is not None else expected_seq - 1
    if head is None:
        if end_seq > 0:
            return broken(end_seq, "the chain head record is missing")
    else:
        if head.seq > end_seq:
            return broken(end_seq + 1, f"truncated: the signed head says record {head.seq} exists, the chain ends at {end_seq}")
        if head.seq < end_seq:
            return broken(head.seq + 1, f"records after the signed head (record {head.seq}) were added outside the store")
        if head.hash != last_hash:
            return broken(end_seq, f"record {end_seq} does not match the signed head")
        if head.signature is None and key is not None:
            warnings.append("the chain head is unsigned (written without a key)")
            signed = False
    if not pinned_seen and pinned is not None:
        if pinned.seq > end_seq:
            return broken(end_seq + 1, f"truncated: the exported head says record {pinned.seq} exists, the chain ends at {end_seq}")
        warnings.append(f"the exported head (record {pinned.seq}) was pruned; it cannot be compared")
    return VerifyReport(True, checked, first, last, None, "", signed, tuple(warnings))
