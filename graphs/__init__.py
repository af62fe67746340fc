"""Workflows: YAML specs compiled to LangGraph graphs of agent steps, and their runner.

Names are loaded lazily: `flotilla validate` reads specs without importing LangGraph.
"""

from __future__ import annotations

from flotilla.audit.lazy import lazy_exports


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
    "RunState",
    "RunStatus",
    "WorkflowContext",
    "PythonWorkflow",
    "python_workflow",
    "chain_nodes",
]

_WHERE = {
    "WorkflowSpec": "flotilla.graphs.spec",
    "SpecError": "flotilla.graphs.spec",
    "load_workflow": "flotilla.graphs.catalog",
    "list_workflows": "flotilla.graphs.catalog",
    "check_spec": "flotilla.graphs.build",
    "validate_spec": "flotilla.graphs.build",
    "build_agents": "flotilla.graphs.build",
    "agent_node": "flotilla.graphs.compile",
    "compile_workflow": "flotilla.graphs.compile",
    "WorkflowRunner": "flotilla.graphs.runner",
    "RunResult": "flotilla.graphs.runner",
    "RunEvent": "flotilla.graphs.runner",
    "RunState": "flotilla.graphs.compile",
    "RunStatus": "flotilla.graphs.status",
    "WorkflowContext": "flotilla.graphs.factory",
    "PythonWorkflow": "flotilla.graphs.factory",
    "python_workflow": "flotilla.graphs.factory",
    "chain_nodes": "flotilla.graphs.factory",
}


__getattr__ = lazy_exports(__name__, _WHERE)
