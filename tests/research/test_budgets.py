"""Each budget, when hit, ends the run with what it has, and the report says what was cut."""

from __future__ import annotations

from .conftest import PLAN, REPORT, frontier_answers, specialist, variant

QUESTION = "Should we pay Northwind's invoice that came with new bank details?"
FIVE = {"sub_questions": [*PLAN["sub_questions"], {"question": "Who owns the invoice policy?", "specialist": "documents"},
                          {"question": "What are Northwind's payment terms?", "specialist": "ledger"}]}


def schemas(h) -> list[str]:
    return [r["response_format"]["json_schema"]["name"] for r in h.frontier.requests]


async def test_max_sub_agents_runs_the_first_ones_and_reports_the_rest(research) -> None:
    h = research(lead=frontier_answers(plan=FIVE))
    result = await h.runner.run(variant(research={"max_sub_agents": 2}), QUESTION)
    assert result.status == "succeeded", result.error
    assert [s["id"] for s in result.output["sub_agents"]] == ["q1", "q2"]
    [cut] = [c for c in result.output["cut"] if "max_sub_agents" in c]
    assert "5 sub-questions; 3 not researched" in cut and "payment terms" in cut


async def test_max_tool_calls_bounds_each_sub_agent(research) -> None:
    h = research(specialist(tool_calls=3))
    result = await h.runner.run(variant(research={"max_tool_calls": 1}), QUESTION)
    assert result.status == "succeeded", result.error
    assert [s["tool_calls"] for s in result.output["sub_agents"]] == [1, 1, 1]
    assert len([s for s in h.spans() if s["name"].startswith("execute_tool ")]) == 3
    assert sum("used all 1 tool calls" in c for c in result.output["cut"]) == 3


async def test_deadline_finishes_with_the_findings_it_has(research) -> None:
    h = research(specialist(delay_s=5.0))
    result = await h.runner.run(variant(research={"deadline_s": 1.5}), QUESTION)
    # Nothing was found and the lead wrote nothing: the report is kept, but it is not a report.
    assert result.status == "needs_review", result.error
    assert {r["step"] for r in result.error["reasons"]} == {"writer", "research"}
    assert all(not s["ok"] and "did not finish" in s["error"] for s in result.output["sub_agents"])
    assert any("timed out (the run deadline)" in c for c in result.output["cut"])
    assert any(c.startswith("synthesis: the deadline passed") for c in result.output["cut"])
    assert schemas(h) == ["Plan"]  # no time left: the lead was not asked to write


async def test_token_ceiling_stops_further_model_calls(research) -> None:
    h = research()
    result = await h.runner.run(variant(settings={"max_tokens": 30}), QUESTION)
    assert result.status == "needs_review", result.error
    out = result.output
    assert all(not s["ok"] and "token ceiling of 30" in s["error"] for s in out["sub_agents"])
    assert any("not researched: token ceiling" in c for c in out["cut"]) and any("synthesis: the lead failed" in c for c in out["cut"])
    assert schemas(h) == ["Plan"] and out["usage"]["model_calls"] == 1


async def test_cost_ceiling_stops_further_model_calls(research) -> None:
    h = research()
    result = await h.runner.run(variant(settings={"max_cost_usd": 0.0001}), QUESTION)
    assert result.status == "needs_review", result.error
    assert all("cost ceiling of $0.0001" in s["error"] for s in result.output["sub_agents"])
    assert schemas(h) == ["Plan"] and result.output["usage"]["cost_usd"] >= 0.0001


async def test_the_lead_may_run_one_more_round_on_the_gaps(research) -> None:
    follow = {**REPORT, "follow_up": [{"question": "Which invoices from Northwind are on file?", "specialist": "ledger"}]}
    h = research(lead=frontier_answers(report=follow))
    result = await h.runner.run(variant(), QUESTION)
    assert result.status == "succeeded", result.error
    assert sorted(s["id"] for s in result.output["sub_agents"]) == ["q1", "q2", "q3", "r2q1"]
    assert result.output["rounds"] == 2 and schemas(h) == ["Plan", "Report", "Report"]
    assert any("not researched (max_rounds=2)" in c for c in result.output["cut"])
