"""A research run that found nothing, or whose lead fell back, says so: `needs_review`, with the
failing steps and reasons — through the runner, the run store, the CLI's exit code and the gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from flotilla.mcp_servers.gateway import Gateway, GatewayHttp
from tests.mcp.helpers import ServedApp
from tests.support.scripted_openai import Reply, ScriptedOpenAI, schema_name
from tests.support.servers import serve_app

from .conftest import PLAN, REPORT, ResearchHarness, frontier_answers, specialist, variant

QUESTION = "Should we pay Northwind's invoice that came with new bank details?"
EVERY_SUB_QUESTION = ("IBAN", "Northwind")  # each planned sub-question names one of these


async def test_every_sub_agent_failing_is_needs_review_with_reasons(research) -> None:
    h = research(specialist(fail_on=EVERY_SUB_QUESTION))
    result = await h.runner.run(variant(research={"escalate": False}), QUESTION)

    assert result.status == "needs_review"
    assert result.error["code"] == "needs_review"
    [reason] = result.error["reasons"]
    assert reason["step"] == "research" and reason["reason"].startswith("every sub-agent failed")
    assert all(f"q{i}: " in reason["reason"] for i in (1, 2, 3)) and "scripted failure" in reason["reason"]
    # Nothing is pretended: the report is kept, and every sub-agent is a gap in it.
    assert [s["ok"] for s in result.output["sub_agents"]] == [False, False, False]
    assert len(result.output["gaps"]) >= 3

    record = h.runs.get_run(result.run_id)
    assert record.status == "needs_review" and record.error["reasons"] == result.error["reasons"]
    assert record.output == result.output
    [run] = [s for s in h.spans() if s["name"] == "invoke_workflow research"]
    assert run["attributes"]["flotilla.status"] == "needs_review"
    assert run["status"]["status_code"] == "UNSET"  # not an error: the status says what it is

    again = await h.runner.resume(variant(research={"escalate": False}), result.run_id)
    assert again.status == "needs_review" and again.output == result.output  # finished: nothing to resume


async def test_a_lead_that_cannot_plan_or_write_is_needs_review(research) -> None:
    def lead(body: dict[str, Any]) -> Reply:
        return Reply(status=400)  # the frontier refuses both the plan and the report

    h = research(lead=lead)
    result = await h.runner.run(variant(research={"escalate": False}), QUESTION)
    assert result.status == "needs_review"
    steps = {r["step"]: r["reason"] for r in result.error["reasons"]}
    assert set(steps) == {"planner", "writer"}
    assert steps["planner"].startswith("the lead could not plan") and "unedited" in steps["writer"]
    # The one sub-agent the question went to did answer: its finding is the report's claim.
    assert [s["ok"] for s in result.output["sub_agents"]] == [True]
    assert result.output["claims"] and result.output["summary"].startswith("Findings of 1 of 1 sub-agents")


async def test_some_gaps_honestly_reported_stay_succeeded(research) -> None:
    h = research(specialist(fail_on=("payments",)))
    result = await h.runner.run(variant(research={"escalate": False}), QUESTION)
    assert result.status == "succeeded" and result.error is None
    assert [s["ok"] for s in result.output["sub_agents"]] == [True, True, False]


def _failing_specialists(body: dict[str, Any]) -> Reply:
    """The lead plans and writes; every specialist call (and its escalation) fails."""
    name = schema_name(body)
    if name == "Plan":
        return Reply(json.dumps(PLAN))
    if name == "Report":
        return Reply(json.dumps(REPORT))
    return Reply(status=400)


def test_the_cli_exits_4_for_needs_review_and_prints_why(tmp_path: Path) -> None:
    server = ScriptedOpenAI(default=_failing_specialists)
    with serve_app(server.app()) as url:
        lines = ["models:"]
        for alias in ("frontier", "specialist-analyze"):
            # `local: true`: the question's names may make the run confidential (input rail PII);
            # a local endpoint keeps serving it instead of falling back to the embedded model.
            lines += [f"  {alias}:", "    provider: openai-compatible", f"    base_url: {url}/v1", f"    model: {alias}", "    max_retries: 0", "    local: true"]
        (tmp_path / "flotilla.yaml").write_text("\n".join(lines) + "\n")
        env = {**os.environ, "FLOTILLA_CONFIG": str(tmp_path / "flotilla.yaml"), "FLOTILLA_DATA_DIR": str(tmp_path / "data"), "FLOTILLA_CACHE_DIR": str(tmp_path / "cache")}

        def flotilla(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "flotilla.runtime", *args], input=QUESTION.encode(), capture_output=True, env=env, cwd=tmp_path, timeout=180)

        as_json = flotilla("run", "research", "--input", "-", "--json")
        printed = flotilla("run", "research", "--input", "-")

    assert as_json.returncode == 4, as_json.stderr.decode()
    result = json.loads(as_json.stdout)
    assert result["status"] == "needs_review" and result["error"]["reasons"][0]["step"] == "research"
    assert result["output"]["sub_agents"] and not any(s["ok"] for s in result["output"]["sub_agents"])
    assert printed.returncode == 4, printed.stderr.decode()
    out = printed.stdout.decode()
    assert "needs review" in out and "every sub-agent failed" in out and "Traceback" not in out


async def test_the_gateway_returns_needs_review_as_a_result_that_says_so(tmp_path: Path, frontier) -> None:
    scripted, url = frontier
    scripted.requests.clear()
    scripted.default = frontier_answers()
    harness = ResearchHarness(tmp_path, specialist(fail_on=EVERY_SUB_QUESTION), url)
    spec = variant(research={"escalate": False})
    http = GatewayHttp(Gateway(lambda: harness.runner, workflows=[spec]), token=None)
    try:
        with ServedApp(http.app("/mcp")) as served:
            async with Client(streamable_http_client(f"{served.url}/mcp"), mode="legacy") as client:
                result = await client.session.call_tool("research", {"input": QUESTION})
    finally:
        harness.telemetry.shutdown()
    # Not a tool error: the run finished and its report is real; the status and reasons lead.
    assert not result.is_error, result.content
    structured = result.structured_content
    assert list(structured)[0] == "status" and structured["status"] == "needs_review"
    assert structured["review"][0]["step"] == "research" and structured["output"]["sub_agents"]
    warning = result.content[0].text
    assert warning.startswith(f"NEEDS REVIEW: run {structured['run_id']}") and "every sub-agent failed" in warning
    assert json.loads(result.content[1].text) == structured
    assert harness.runs.get_run(structured["run_id"]).status == "needs_review"

