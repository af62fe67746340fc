"""The research lead's contract: plan and report schemas, the facts it is shown, citation checks.

The lead is two agent steps on the `frontier` alias — a planner (question → sub-questions)
and a writer (findings → cited report) — declared in graphs/research.yaml like any agent,
so they get chat spans, schema-constrained output and one repair. This module holds what
is specific to research: the schemas, the facts hook, turning tool calls into citable
sources, checking the report's citations against them, and the report assembled without
the lead when the lead cannot be used (deadline, budget, failure).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "SubQuestion",
    "Plan",
    "Finding",
    "Claim",
    "Report",
    "research_facts",
    "sources_from_calls",
    "check_citations",
    "report_without_lead",
    "EXCERPT_CHARS",
]

EXCERPT_CHARS = 600
"""How much of a tool result a source keeps (and the writer is shown)."""


class SubQuestion(BaseModel):
    question: str = Field(min_length=1, max_length=240)
    specialist: str = Field(max_length=40, description="Which specialist answers it (one of the facts' `specialists`).")


class Plan(BaseModel):
    sub_questions: list[SubQuestion] = Field(min_length=1, max_length=20)


class Finding(BaseModel):
    """A sub-agent's answer; `cited_calls` are the 1-based numbers of the tool calls it relied on."""

    answer: str = Field(min_length=1, max_length=600)
    cited_calls: list[int] = Field(default_factory=list, max_length=8)


class Claim(BaseModel):
    text: str = Field(min_length=1, max_length=400)
    citations: list[str] = Field(default_factory=list, max_length=6, description="Source ids, e.g. q1.2")


class Report(BaseModel):
    summary: str = Field(min_length=1, max_length=900)
    claims: list[Claim] = Field(default_factory=list, max_length=10)
    gaps: list[str] = Field(default_factory=list, max_length=6)
    follow_up: list[SubQuestion] = Field(default_factory=list, max_length=5)
    """Sub-questions for one more round, when the findings leave gaps worth filling."""


def research_facts(state: dict[str, Any]) -> dict[str, Any]:
    """The context hook of every research agent: the facts the graph put in the state."""
    return dict(state.get("facts") or {})


def sources_from_calls(prefix: str, calls: list[dict[str, Any]], agent: str) -> dict[str, dict[str, Any]]:
    """Citable sources from one sub-agent's tool calls: `<prefix>.<n>` → tool, arguments, excerpt.

    n is the call's 1-based position among all its calls (the numbering the sub-agent cites
    with); calls that failed or were refused are not sources.
    """
    sources = {}
    for n, call in enumerate(calls, start=1):
        if call.get("is_error"):
            continue
        sid = f"{prefix}.{n}"
        sources[sid] = {
            "id": sid,
            "tool": call["tool"],
            "arguments": call.get("arguments") or {},
            "excerpt": str(call.get("observation", ""))[:EXCERPT_CHARS],
            "agent": agent,
        }
    return sources


def check_citations(report: dict[str, Any], sources: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Keep only citations that name a real source; say what was dropped."""
    dropped: list[str] = []
    claims = []
    for claim in report.get("claims", []):
        kept = [c for c in claim.get("citations", []) if c in sources]
        dropped += [c for c in claim.get("citations", []) if c not in sources]
        claims.append({**claim, "citations": kept})
    notes = [f"removed {len(dropped)} citation(s) that match no tool result: {', '.join(sorted(set(dropped)))}"] if dropped else []
    return {**report, "claims": claims}, notes


def report_without_lead(findings: list[dict[str, Any]], why: str) -> dict[str, Any]:
    """The findings as the report, verbatim, when the lead cannot write it."""
    ok = [f for f in findings if f.get("ok")]
    claims = [{"text": f["answer"][:400], "citations": list(f.get("sources", []))[:6]} for f in ok]
    gaps = [f"{f['id']} ({f['question']}): {f.get('error') or 'no answer'}" for f in findings if not f.get("ok")]
    summary = f"Findings of {len(ok)} of {len(findings)} sub-agents, unedited: {why}."
    return {"summary": summary, "claims": claims, "gaps": gaps, "follow_up": []}
