"""Workflow spec: YAML → pydantic, with every problem reported as `file:line: what to fix`.

    name: document_triage
    input: {type: text, max_bytes: 1000000}
    agents:
      extract: {role: …, instructions: ../agents/…/extract.md, output_schema: pkg.mod:Model, model: specialist-extract}
    edges:
      - {from: extract, to: analyze}
      - {from: decide, switch: decide.decision, cases: {reject: END}, default: write}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from flotilla.audit.errors import ConfigError
from flotilla.graphs.approval_spec import Approval
from flotilla.graphs.spec_kinds import MAX_SUB_AGENTS, NEEDS_REVIEW, ROUTE_TO_FALLBACK, ResearchSettings, RouterSettings, RouteSpec

__all__ = [
    "WorkflowSpec",
    "AgentSpec",
    "EdgeSpec",
    "InputSpec",
    "WorkflowSettings",
    "ResearchSettings",
    "RouterSettings",
    "CheckSpec",
    "RouteSpec",
    "ROUTE_TO_FALLBACK",
    "NEEDS_REVIEW",
    "SpecError",
    "SpecProblem",
    "parse_spec",
    "END",
    "MAX_SUB_AGENTS",
]

END = "END"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputSpec(_Strict):
    type: Literal["text"] = "text"
    description: str = "The document to process, as plain text."
    max_bytes: int | None = Field(default=None, gt=0)
    """Overrides the runtime's input size limit for this workflow."""


class CheckSpec(_Strict):
    """One `verify:` entry: exactly one of `expr`, `call`, `grounded`, `confidence`, `degenerate`.

        - {name: lines_add_up, expr: "approx(sum(line_items.amount), subtotal)", message: …}
        - {name: known_vendor, call: pkg.mod:function, message: …}
        - grounded: [vendor, invoice_number]     # values that must appear in the input
        - confidence: 0.7                        # minimum for the output's `confidence` field
        - degenerate: false                      # turn the built-in degenerate-text check off
    """

    name: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.-]*$")
    expr: str | None = None
    call: str | None = None
    grounded: list[str] | None = None
    confidence: float | None = Field(default=None, ge=0, le=1)
    degenerate: bool | None = None
    message: str | None = None
    """What a failure means, for the step record and a person reviewing it."""

    @model_validator(mode="after")
    def _one_kind(self) -> CheckSpec:
        kinds = [k for k in ("expr", "call", "grounded", "confidence", "degenerate") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a check needs exactly one of `expr`, `call`, `grounded`, `confidence` or `degenerate`")
        if kinds[0] in ("expr", "call") and not (self.name and self.message):
            raise ValueError(f"an `{kinds[0]}` check needs a `name` and a `message` saying what a failure means")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("expr", "call", "grounded", "confidence", "degenerate") if getattr(self, k) is not None)


class AgentSpec(_Strict):
    """One node of a workflow. A model step (the default) has `instructions` and `output_schema`;
    a tool node has `tool:` (+ `arguments:`) and calls that MCP tool directly; a function node
    has `function:` and runs deterministic Python. See graphs/tool_node.py and function_node.py."""

    role: str
    instructions: str | None = None
    """Path of the prompt file, relative to the workflow file (model steps)."""
    output_schema: str | None = None
    """`package.module:PydanticModel`, or a JSON Schema file relative to the workflow file
    (model steps; optional on a function node, which is then validated against it)."""
    tool: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$")
    """Tool node: the MCP tool `server.tool` this step calls, no model involved."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """Tool node: the call's arguments; a string `"{node.field}"` is that value from the state
    (`{input}` is the run's input), a longer string with `{…}` in it is filled in as text."""
    on_error: Literal["fail", "continue"] = "fail"
    """Tool node: `continue` records a failed call as `{"error": {code, message}}` in the state
    (for steps that read it as evidence); `fail` ends the run with the typed error."""
    function: str | None = None
    """Function node: `package.module:function` taking the run state, returning the step's output."""
    model: str | list[str] = "embedded"
    """A model alias from flotilla.yaml, or an ordered list of tiers (`[specialist, frontier]`):
    an answer that fails validation or verification goes to the next one (agents/cascade.py)."""
    verify: list[CheckSpec] = Field(default_factory=list)
    """Checks every answer must pass, beside the built-in ones (agents/verify.py)."""
    tools: list[str] = Field(default_factory=list)
    """Allowlist of MCP tools (`server.tool`, globs allowed)."""
    max_tool_steps: int = Field(default=4, gt=0, le=50)
    """Model turns an agent with tools may take (tool calls plus the final answer)."""
    timeout_s: float | None = Field(default=None, gt=0)
    max_tokens: int = Field(default=384, gt=0, le=8192)
    reads: list[str] | None = None
    """Earlier agents whose outputs this agent sees (default: all)."""
    include_input: bool = True
    context: str | None = None
    """`module:function` computing facts from the state, shown to the model."""
    policy: str | None = None
    """`module:function` enforcing business invariants on the validated output."""
    approval: Approval = None
    """A person must approve this step's output before the run goes on (`true`, or a mapping
    with `when:`, `timeout:`, `on_timeout:`, `approvers:`; graphs/approval_spec.py)."""

    @property
    def kind(self) -> Literal["model", "tool", "function"]:
        return "tool" if self.tool is not None else "function" if self.function is not None else "model"

    @model_validator(mode="after")
    def _one_node_kind(self) -> AgentSpec:
        if self.tool is not None and self.function is not None:
            raise ValueError("a node is either a tool node (`tool:`) or a function node (`function:`), not both")
        if self.kind == "model":
            missing = [key for key in ("instructions", "output_schema") if getattr(self, key) is None]
            if missing:
                raise ValueError(f"a model step needs {' and '.join(missing)} (or make it a tool node with `tool: server.tool`, or a function node with `function: module:function`)")
            if self.arguments:
                raise ValueError("`arguments:` belongs to a tool node; add `tool: server.tool`")
            return self
        model_only = ["instructions", "context", "policy", "tools"] + (["output_schema"] if self.kind == "tool" else [])
        given = [key for key in model_only if getattr(self, key)]
        if given:
            raise ValueError(f"a {self.kind} node calls no model: remove {', '.join(given)}")
        if self.kind == "function" and self.arguments:
            raise ValueError("`arguments:` belongs to a tool node; a function node reads the run state itself")
        return self


class EdgeSpec(_Strict):
    source: str = Field(alias="from")
    to: str | None = None
    switch: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w-]*\.[\w.]+$")
    """`agent.field[.field…]`: route on a value in an agent's output."""
    cases: dict[str, str] = Field(default_factory=dict)
    default: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> EdgeSpec:
        if (self.to is None) == (self.switch is None):
            raise ValueError("an edge needs exactly one of `to` (always go there) or `switch` (route on a field)")
        if self.switch is not None and not (self.cases or self.default):
            raise ValueError("a `switch` edge needs `cases` and/or a `default`")
        return self

    @property
    def targets(self) -> list[str]:
        if self.to is not None:
            return [self.to]
        return [*self.cases.values(), *([self.default] if self.default else [])]


class WorkflowSettings(_Strict):
    sensitivity: Literal["public", "internal", "confidential"] = "internal"
    max_steps: int = Field(default=25, gt=0, le=1000)
    on_remote: Literal["refuse", "fallback"] = "refuse"
    """In a confidential run, a call to a non-local model is refused, or rerouted to the local model."""
    max_tokens: int | None = Field(default=None, gt=0)
    """Token ceiling over every model call of a run; when spent, further calls are refused."""
    max_cost_usd: float | None = Field(default=None, gt=0)
    """Cost ceiling (priced from `prices:` in flotilla.yaml)."""
    approval_on_review: Approval = None
    """A run that would end `needs_review` waits for a person instead (`true`, or a mapping with
    `timeout:`, `on_timeout:`, `approvers:`): approved, it `succeeded`; rejected, it is `blocked`."""


class WorkflowSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    kind: Literal["workflow", "research", "python", "router"] = "workflow"
    """`workflow`: agents joined by edges. `research`: lead fan-out (see the `research:` section).
    `python`: a LangGraph built by a Python factory (`factory:`; see graphs/factory.py)."""
    description: str = ""
    input: InputSpec = Field(default_factory=InputSpec)
    entry: str | None = None
    output: str | None = None
    """The agent whose output is the workflow's output (default: the last one that ran)."""
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    """At least one, except in a Python workflow (its factory builds its own agents)."""
    factory: str | None = None
    """`kind: python`: `package.module:name` of the graph factory (a `@python_workflow` or a
    function taking a `WorkflowContext` and returning an uncompiled StateGraph)."""
    edges: list[EdgeSpec] = Field(default_factory=list)
    settings: WorkflowSettings = Field(default_factory=WorkflowSettings)
    rails: dict[str, Any] | None = None
    """Guardrail configuration for this workflow (see guardrails/)."""
    research: ResearchSettings | None = None
    router: RouterSettings | None = None
    """`kind: router`: its routes, examples, threshold and fallback (see graphs/router.py)."""

    @model_validator(mode="after")
    def _agents_or_factory(self) -> WorkflowSpec:
        if self.kind == "router" or self.router is not None:
            if self.kind != "router" or self.router is None:
                raise ValueError("a router needs both `kind: router` and a `router:` section with its routes")
            if self.agents or self.edges or self.factory:
                raise ValueError("a `kind: router` workflow has no agents, edges or factory; it sends each request to one of its `router.routes`")
        elif self.kind == "python":
            if not self.factory:
                raise ValueError("a `kind: python` workflow needs `factory: package.module:name`")
            if self.agents or self.edges:
                raise ValueError("a `kind: python` workflow builds its agents and edges in its factory; remove `agents:` and `edges:`")
        elif self.factory is not None:
            raise ValueError("`factory:` needs `kind: python`")
        elif not self.agents:
            raise ValueError("`agents:` needs at least one agent")
        return self

    @model_validator(mode="after")
    def _research_section(self) -> WorkflowSpec:
        if self.kind == "research":
            self.research = self.research or ResearchSettings()
            for role in (self.research.planner, self.research.writer, *(self.research.specialists or ())):
                if role not in self.agents:
                    raise ValueError(f"research: agent {role!r} is not declared under `agents:`")
            if not self.specialist_names:
                raise ValueError("research: no specialist agents; give at least one agent `tools:` or list `research.specialists`")
        elif self.research is not None:
            raise ValueError("a `research:` section needs `kind: research`")
        return self

    @property
    def specialist_names(self) -> list[str]:
        if self.research is None:
            return []
        if self.research.specialists is not None:
            return list(self.research.specialists)
        lead = {self.research.planner, self.research.writer}
        return [name for name, agent in self.agents.items() if agent.tools and name not in lead]

    source: Path | None = Field(default=None, exclude=True)
    lines: dict[tuple[Any, ...], int] = Field(default_factory=dict, exclude=True, repr=False)
    _version: str | None = PrivateAttr(default=None)

    @property
    def entry_agent(self) -> str:
        return self.entry or next(iter(self.agents))

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def line_of(self, *loc: Any) -> int | None:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None

    def version(self) -> str:
        """Content hash of the workflow file and every prompt and schema file it names.

        Computed once per loaded spec: a changed file is a new version on the next load.
        """
        if self._version is None:
            self._version = self._hash()
        return self._version

    def _hash(self) -> str:
        digest = hashlib.sha256(json.dumps(self.model_dump(by_alias=True), sort_keys=True).encode())
        for agent in self.agents.values():
            for ref in (agent.instructions, agent.output_schema):
                path = self.base_dir / ref if ref else None
                if path is not None and path.is_file():
                    digest.update(path.read_bytes())
            code = _module_file(agent.function.partition(":")[0]) if agent.function else None
            if code is not None:  # a function node's version follows its module's source
                digest.update(code.read_bytes())
        if self.router is not None and self.router.examples:  # a router's version follows its examples
            path = self.base_dir / self.router.examples
            if path.is_file():
                digest.update(path.read_bytes())
        if self.factory:  # a Python workflow's version follows its factory module's source
            origin = _module_file(self.factory.partition(":")[0])
            if origin is not None:
                digest.update(origin.read_bytes())
        return digest.hexdigest()[:12]


def _module_file(module: str) -> Path | None:
    from importlib.util import find_spec

    try:
        found = find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = Path(found.origin) if found is not None and found.origin else None
    return origin if origin is not None and origin.is_file() else None


class SpecProblem(BaseModel):
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class SpecError(ConfigError):
    """A workflow file is invalid. `problems` lists each one with its line."""

    code = "invalid_workflow"

    def __init__(self, problems: list[SpecProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _line_map(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value
            out[(*path, name)] = key.start_mark.line + 1
            _line_map(value, (*path, name), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*path, index), out)


def parse_spec(text: str, source: Path | None = None) -> WorkflowSpec:
    """Parse and structurally validate a workflow; semantic checks are in `graphs.validate`."""
    file = str(source) if source else "<workflow>"
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        raise SpecError([SpecProblem(file=file, line=line, message=f"malformed YAML: {problem}")]) from None
    if not isinstance(data, dict) or root is None:
        raise SpecError([SpecProblem(file=file, line=1, message="a workflow file must be a YAML mapping with `name`, `agents` and `edges`")])
    lines: dict[tuple[Any, ...], int] = {}
    _line_map(root, (), lines)
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple("from" if part == "source" else part for part in err["loc"])
            line = next((lines[loc[:end]] for end in range(len(loc), -1, -1) if loc[:end] in lines), None)
            field = ".".join(map(str, loc)) or "workflow"
            problems.append(SpecProblem(file=file, line=line, message=f"{field}: {err['msg']}"))
        raise SpecError(problems) from None
    spec.source = source
    spec.lines = lines
    return spec
