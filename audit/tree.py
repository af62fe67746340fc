"""One run's records as a view: the span tree with waterfall geometry, rail decisions, totals.

Shared by `flotilla audit show`, the web run page and the HTML export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flotilla.audit import semconv as sc
from flotilla.audit.semconv import CONTENT_KEYS, CONTENT_PREFIX
from flotilla.audit.store import StoredRecord
from flotilla.audit.summaries import rail_decisions

__all__ = ["SpanNode", "RunView", "build_view"]


@dataclass(slots=True)
class SpanNode:
    seq: int
    span: dict[str, Any]
    depth: int = 0
    children: list[SpanNode] = field(default_factory=list)
    offset_pct: float = 0.0
    width_pct: float = 0.0

    @property
    def attrs(self) -> dict[str, Any]:
        return self.span.get("attributes", {})

    @property
    def name(self) -> str:
        return str(self.span.get("name", ""))

    @property
    def operation(self) -> str:
        return str(self.attrs.get(sc.OPERATION) or ("rail" if sc.rail_fields(self.attrs) else "span"))

    @property
    def duration_ms(self) -> float:
        start, end = self.span.get("start"), self.span.get("end")
        return (end - start) / 1e6 if start and end else 0.0

    @property
    def failed(self) -> bool:
        return self.span.get("status") == "ERROR"

    @property
    def rails(self) -> list[dict[str, Any]]:
        """This span's rail decisions as plain fields (see `semconv.rail_fields`)."""
        return [fields for d in rail_decisions(self.span) if (fields := sc.rail_fields(d)) is not None]

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        """`gen_ai.evaluation.result` events: schema validation, grounding, verification."""
        return [
            {
                "name": a.get(sc.EVALUATION_NAME),
                "label": a.get(sc.EVALUATION_LABEL),
                "score": a.get(sc.EVALUATION_SCORE),
                "explanation": a.get(sc.EVALUATION_EXPLANATION, ""),
            }
            for ev in self.span.get("events", ())
            if ev.get("name") == sc.EVALUATION_EVENT and (a := ev.get("attributes", {}))
        ]

    @property
    def verdict(self) -> str | None:
        ranks = {"allow": 1, "redact": 2, "block": 3}
        found = [r["verdict"] for r in self.rails]
        return max(found, key=lambda v: ranks.get(v, 0)) if found else None

    @property
    def model(self) -> str | None:
        return self.attrs.get("gen_ai.response.model") or self.attrs.get("gen_ai.request.model")

    @property
    def tokens(self) -> tuple[int, int]:
        return int(self.attrs.get("gen_ai.usage.input_tokens") or 0), int(self.attrs.get("gen_ai.usage.output_tokens") or 0)

    @property
    def content(self) -> dict[str, Any]:
        return {k: v for k, v in self.attrs.items() if k in CONTENT_KEYS or k.startswith(CONTENT_PREFIX)}

    @property
    def plain_attrs(self) -> dict[str, Any]:
        return {k: v for k, v in self.attrs.items() if k not in CONTENT_KEYS and not k.startswith(CONTENT_PREFIX)}

    def walk(self) -> list[SpanNode]:
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


@dataclass(slots=True)
class RunView:
    run_id: str
    roots: list[SpanNode]
    records: list[StoredRecord]
    start_ns: int
    end_ns: int

    @property
    def nodes(self) -> list[SpanNode]:
        return [n for root in self.roots for n in root.walk()]

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6 if self.end_ns > self.start_ns else 0.0

    @property
    def rail_records(self) -> list[StoredRecord]:
        return [r for r in self.records if r.kind == "rail"]

    @property
    def rail_rows(self) -> list[dict[str, Any]]:
        """Each rail record as plain fields plus its record number and span name, for tables."""
        rows = []
        for rec in self.rail_records:
            fields = sc.rail_fields(rec.payload)
            if fields is not None:
                rows.append({"seq": rec.seq, "span": rec.payload.get("span"), **fields})
        return rows

    @property
    def other_records(self) -> list[StoredRecord]:
        return [r for r in self.records if r.kind not in ("span", "rail")]


def build_view(run_id: str, records: list[StoredRecord]) -> RunView:
    spans = [(r.seq, r.payload) for r in records if r.kind == "span"]
    nodes = {p.get("span_id"): SpanNode(seq, p) for seq, p in spans}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(node.span.get("parent_id"))
        (parent.children if parent is not None and parent is not node else roots).append(node)
    starts = [p["start"] for _, p in spans if p.get("start")]
    ends = [p["end"] for _, p in spans if p.get("end")]
    start_ns, end_ns = (min(starts), max(ends)) if starts and ends else (0, 0)
    total = max(end_ns - start_ns, 1)

    def place(node: SpanNode, depth: int) -> None:
        node.depth = depth
        node.children.sort(key=lambda n: (n.span.get("start") or 0, n.seq))
        s, e = node.span.get("start") or start_ns, node.span.get("end") or end_ns
        node.offset_pct = round(100 * (s - start_ns) / total, 3)
        node.width_pct = round(max(100 * (e - s) / total, 0.4), 3)
        for child in node.children:
            place(child, depth + 1)

    roots.sort(key=lambda n: (n.span.get("start") or 0, n.seq))
    for root in roots:
        place(root, 0)
    return RunView(run_id, roots, records, start_ns, end_ns)
