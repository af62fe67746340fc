"""Workflows: YAML specs compiled to LangGraph graphs of agent steps, and their runner."""

from flotilla.graphs.build import build_agents, check_spec, validate_spec
from flotilla.graphs.catalog import list_workflows, load_workflow
from flotilla.graphs.compile import agent_node, compile_workflow
from flotilla.graphs.runner import RunEvent, RunResult, WorkflowRunner
from flotilla.graphs.spec import SpecError, WorkflowSpec

__all__ = [
    "WorkflowSpec",
    "SpecError",
    "load_workflow",
    "list_workflows",
    "check_spec",
    "validate_spec",
    "build_agents",
    "agent_node",
    "compile_workflow",
    "WorkflowRunner",
    "RunResult",
    "RunEvent",
]
