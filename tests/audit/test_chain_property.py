"""Property: any single edit, delete, insert or swap in a chain of N records is detected."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.audit.chain import GENESIS, ChainRecord, SignedMark, canonical_json, record_hash, sign_mark, verify_chain

KEY = b"property-test-key"


def build_chain(n: int) -> list[ChainRecord]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        payload = canonical_json({"i": seq, "name": f"span {seq}"})
        at = f"2026-11-22T10:00:{seq % 60:02d}.000000Z"
        digest = record_hash(seq, "span", f"run-{seq % 3}", at, payload, prev)
        out.append(ChainRecord(seq, "span", f"run-{seq % 3}", at, payload, prev, digest))
        prev = digest
    return out


def head_of(chain: list[ChainRecord]) -> SignedMark:
    last = chain[-1]
    return sign_mark(SignedMark("head", last.seq, last.hash, last.recorded_at), KEY)


def forged(seq: int, prev: str, payload: str) -> ChainRecord:
    """What an attacker who knows the algorithm (not the key) can write: a self-consistent record."""
    digest = record_hash(seq, "span", "run-x", "2026-11-22T11:00:00.000000Z", payload, prev)
    return ChainRecord(seq, "span", "run-x", "2026-11-22T11:00:00.000000Z", payload, prev, digest)


FIELDS = ("kind", "run_id", "recorded_at", "payload", "prev_hash", "hash", "seq")


@st.composite
def tampered(draw: st.DrawFn) -> tuple[list[ChainRecord], SignedMark, str]:
    n = draw(st.integers(min_value=1, max_value=40))
    chain = build_chain(n)
    head = head_of(chain)
    op = draw(st.sampled_from(["edit", "delete", "insert", "swap"] if n > 1 else ["edit", "delete", "insert"]))
    i = draw(st.integers(min_value=0, max_value=n - 1))
    if op == "edit":
        field = draw(st.sampled_from(FIELDS))
        rec = chain[i]
        if field == "seq":
            value = draw(st.integers(min_value=0, max_value=10 * n).filter(lambda v: v != rec.seq))
        elif field == "payload":
            value = canonical_json({"i": draw(st.integers()), "edited": True})
        else:
            value = draw(st.text(min_size=1, max_size=64).filter(lambda v: v != getattr(rec, field)))
        edited = rec._replace(**{field: value})
        # an editor who also fixes the record's own hash
        if field != "hash" and draw(st.booleans()):
            edited = edited._replace(hash=edited.recompute())
        chain[i] = edited
        chain.sort(key=lambda r: r.seq if isinstance(r.seq, int) else 0)  # the store reads ORDER BY seq
    elif op == "delete":
        del chain[i]
    elif op == "insert":
        at = draw(st.integers(min_value=0, max_value=n))
        prev = chain[at - 1].hash if at > 0 else GENESIS
        new = forged(at + 1, prev, canonical_json({"forged": draw(st.integers())}))
        renumber = draw(st.booleans())
        tail = [r._replace(seq=r.seq + 1) if renumber else r for r in chain[at:]]
        chain = chain[:at] + [new] + tail
        chain.sort(key=lambda r: r.seq)
    else:
        j = draw(st.integers(min_value=0, max_value=n - 1).filter(lambda v: v != i))
        a, b = chain[i], chain[j]
        # the rows trade places: each keeps its content but takes the other's sequence number
        chain[i], chain[j] = b._replace(seq=a.seq), a._replace(seq=b.seq)
    return chain, head, op


@settings(max_examples=400, deadline=None)
@given(tampered())
def test_any_single_tamper_is_detected(case: tuple[list[ChainRecord], SignedMark, str]) -> None:
    chain, head, op = case
    report = verify_chain(chain, head=head, key=KEY)
    assert not report.ok, op
    assert report.broken_seq is not None and report.reason


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=60))
def test_untouched_chains_verify(n: int) -> None:
    chain = build_chain(n)
    head = head_of(chain) if chain else None
    report = verify_chain(chain, head=head, key=KEY)
    assert report.ok and report.checked == n
