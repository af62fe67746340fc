"""One run as a self-contained file a person can attach to a case: JSON or HTML.

Both carry every record of the run with the fields needed to recompute its hash, the chain
status at export time and the signed head, so the file can be checked later against the store.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flotilla.audit.chain import SignedMark, VerifyReport, canonical_json, record_hash
from flotilla.audit.errors import FlotillaError
from flotilla.audit.store import AuditStore
from flotilla.audit.templating import render
from flotilla.audit.tree import build_view

__all__ = ["RunNotFound", "run_bundle", "export_json", "export_html", "check_export", "EXPORT_FORMAT"]

EXPORT_FORMAT = "flotilla-audit-export/1"


class RunNotFound(FlotillaError):
    """No run with that id in the audit store."""

    code = "audit_run_not_found"


def run_bundle(store: AuditStore, run_id: str, chain: VerifyReport | None = None) -> dict[str, Any]:
    summary = store.run_summary(run_id)
    records = store.run_records(run_id)
    if summary is None and not records:
        raise RunNotFound(f"no run {run_id!r} in the audit store; `flotilla audit runs` lists them")
    head = store.head()
    return {
        "format": EXPORT_FORMAT,
        "exported_at": datetime.now(UTC).isoformat(),
        "run": summary,
        "chain": (chain or store.verify()).to_dict(),
        "head": head.to_dict() if head else None,
        "records": [
            {
                "seq": r.seq,
                "kind": r.kind,
                "run_id": r.run_id,
                "recorded_at": r.recorded_at,
                "payload": r.payload,
                "prev_hash": r.prev_hash,
                "hash": r.hash,
            }
            for r in records
        ],
        "hash_rule": 'sha256 of {"kind":K,"prev":PREV,"recorded_at":T,"run_id":R,"seq":N,"payload":P} where P is the payload as canonical JSON (sorted keys, no spaces, UTF-8)',
    }


def export_json(store: AuditStore, run_id: str) -> str:
    return json.dumps(run_bundle(store, run_id), ensure_ascii=False, indent=2)


def export_html(store: AuditStore, run_id: str) -> str:
    bundle = run_bundle(store, run_id)
    view = build_view(run_id, store.run_records(run_id))
    return render(
        "export.html",
        run=bundle["run"] or {"run_id": run_id},
        view=view,
        chain=bundle["chain"],
        head=bundle["head"],
        exported_at=bundle["exported_at"],
        bundle_json=json.dumps(bundle, ensure_ascii=False).replace("</", "<\\/"),
        standalone=True,
    )


def check_export(bundle: dict[str, Any], key: bytes | None = None) -> list[str]:
    """Problems with an exported JSON file on its own (no store needed); empty when it is intact.

    Each record's hash is recomputed from its fields, consecutive records must link, and with
    the key the signed head in the file must carry a valid signature.
    """
    problems: list[str] = []
    if bundle.get("format") != EXPORT_FORMAT:
        return [f"not a {EXPORT_FORMAT} file"]
    previous: dict[str, Any] | None = None
    for rec in bundle.get("records", []):
        payload = canonical_json(rec["payload"])
        if record_hash(rec["seq"], rec["kind"], rec["run_id"], rec["recorded_at"], payload, rec["prev_hash"]) != rec["hash"]:
            problems.append(f"record {rec['seq']} was edited: its content no longer matches its hash")
        if previous is not None and rec["seq"] == previous["seq"] + 1 and rec["prev_hash"] != previous["hash"]:
            problems.append(f"record {rec['seq']} does not link to record {previous['seq']}")
        previous = rec
    head = bundle.get("head")
    if key is not None and head is not None and not SignedMark.from_dict(head).valid(key):
        problems.append("the signed chain head in the file has a bad signature")
    return problems
