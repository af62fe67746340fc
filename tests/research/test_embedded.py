"""The research workflow on the real embedded model: lead and specialist both local and small."""

from __future__ import annotations

import pytest

from flotilla.agents.models.embedded import EmbeddedClient

from .conftest import variant

pytestmark = pytest.mark.model


async def test_a_research_run_on_the_embedded_model_cites_only_real_tool_results(research, embedded_engine) -> None:
    h = research(EmbeddedClient(embedded_engine, max_tokens=256), remote_lead=False)
    spec = variant(
        research={"max_sub_agents": 1, "max_tool_calls": 1, "max_rounds": 1, "specialists": ["ledger"]},
        agents={"planner": {"max_tokens": 120}, "writer": {"max_tokens": 200}, "ledger": {"max_tokens": 120}},
    )
    result = await h.runner.run(spec, "Is the vendor Northwind Office Supplies active?")
    # The stock 135M model often cannot plan or write: then the run must say so, not succeed.
    assert result.status in ("succeeded", "needs_review"), result.error
    if result.status == "needs_review":
        assert result.error["reasons"] and all(r["step"] in {"planner", "writer", "research"} for r in result.error["reasons"])
    out = result.output
    assert h.frontier.requests == [] and out["usage"]["remote_calls"] == 0
    assert len(out["sub_agents"]) == 1 and out["sub_agents"][0]["specialist"] == "ledger"
    cited = {c for claim in out["claims"] for c in claim["citations"]}
    assert cited <= set(out["sources"])  # whatever the small model cites, only real tool results survive
    for source in out["sources"].values():
        again = await h.hub.call(source["tool"], source["arguments"])
        assert again.observation(2000).startswith(source["excerpt"])
    assert {s["agent"] for s in result.steps} >= {"planner", "ledger/q1"}
