"""Confidential runs never reach the frontier endpoint: the scripted server records every request."""

from __future__ import annotations

from flotilla.graphs import load_workflow
from flotilla.guardrails import Guardrails

from .conftest import variant

QUESTION = "Should we pay Northwind's invoice that came with new bank details?"


def chats(h) -> list[dict]:
    return [s["attributes"] for s in h.spans() if s["name"].startswith("chat ")]


async def test_a_confidential_run_falls_back_to_the_local_model_and_proves_it(research) -> None:
    h = research()
    result = await h.runner.run(load_workflow("research"), QUESTION, confidential=True)
    assert result.status == "succeeded", result.error
    assert h.frontier.requests == []
    attrs = chats(h)
    assert attrs and all(a["flotilla.model_local"] is True for a in attrs)
    lead = [a for a in attrs if a["flotilla.model_alias"] == "frontier"]
    assert len(lead) == 2 and all(a["flotilla.policy.rerouted"] for a in lead)
    [run] = [s for s in h.spans() if s["name"] == "invoke_workflow research"]
    assert run["attributes"]["flotilla.sensitivity"] == "confidential" and run["attributes"]["flotilla.run.remote_calls"] == 0
    assert result.output["sensitivity"] == {"confidential": True, "reason": "run flag", "remote_calls": 0}
    assert {s["model"] for s in result.steps} == {"specialist-double"}


async def test_a_confidential_workflow_that_refuses_fails_without_calling_the_frontier(research) -> None:
    h = research()
    spec = variant(settings={"sensitivity": "confidential", "on_remote": "refuse"})
    result = await h.runner.run(spec, QUESTION)
    assert result.status == "failed" and result.error["code"] == "remote_model_refused"
    assert "confidential (workflow setting)" in result.error["message"]
    assert h.frontier.requests == []
    assert result.steps[-1]["agent"] == "planner" and result.steps[-1]["ok"] is False


async def test_pii_found_by_the_input_rail_makes_the_run_confidential(research) -> None:
    h = research()
    h.runner.rails = Guardrails(
        {
            "presidio": {"points": ["input"], "entities": ["EMAIL_ADDRESS"]},
            "yara": {"enabled": False},
            "injection_classifier": {"enabled": False},
            "content_safety": {"enabled": False},
            "tool_screen": {"enabled": False},
            "llama_guard": {"enabled": False},
        }
    )
    result = await h.runner.run(variant(), "Did jane.doe@example.com ask us to change Northwind's bank details?")
    assert result.status == "succeeded", result.error
    assert h.frontier.requests == []
    assert result.output["sensitivity"]["reason"] == "input rail found PII"
    assert "jane.doe@example.com" not in result.output["question"]


async def test_a_resumed_confidential_run_stays_confidential(research) -> None:
    h = research()
    spec = variant(settings={"on_remote": "refuse"})
    first = await h.runner.run(spec, QUESTION, confidential=True)
    assert first.status == "failed" and first.error["code"] == "remote_model_refused"
    again = await h.runner.resume(spec, first.run_id)  # no flag given: the checkpoint remembers it
    assert again.status == "failed" and again.error["code"] == "remote_model_refused" and "run flag" in again.error["message"]
    assert h.frontier.requests == []
