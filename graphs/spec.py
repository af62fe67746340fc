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

__all__ = [
    "WorkflowSpec",
    "AgentSpec",
    "EdgeSpec",
    "InputSpec",
    "WorkflowSettings",
    "ResearchSettings",
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


class AgentSpec(_Strict):
    role: str
    instructions: str
    """Path of the prompt file, relative to the workflow file."""
    output_schema: str
    """`package.module:PydanticModel`, or a JSON Schema file relative to the workflow file."""
    model: str = "embedded"
    """A model alias from flotilla.yaml."""
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


MAX_SUB_AGENTS = 20
"""Hard cap on parallel sub-agents per research round, whatever a workflow asks for."""


class ResearchSettings(_Strict):
    """`kind: research`: a lead plans, sub-agents research in parallel, the lead writes the report."""

    planner: str = "planner"
    """The agent (model alias `frontier`) turning the question into sub-questions."""
    writer: str = "writer"
    """The agent writing the cited report from the findings."""
    specialists: list[str] | None = None
    """Agents a sub-question may go to (default: every agent with tools)."""
    max_sub_agents: int = Field(default=3, ge=1, le=MAX_SUB_AGENTS)
    max_tool_calls: int = Field(default=4, ge=0, le=20)
    """Tool calls per sub-agent."""
    deadline_s: float = Field(default=600.0, gt=0)
    """Wall-clock deadline for the whole run; when it passes, the report is written from what there is."""
    sub_agent_timeout_s: float | None = Field(default=None, gt=0)
    max_rounds: int = Field(default=2, ge=1, le=2)
    """2 lets the lead run one more round on the gaps it sees."""
    escalate: bool = True
    """A sub-agent whose specialist fails is retried once on the frontier model (not in confidential runs)."""


class WorkflowSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    kind: Literal["workflow", "research", "python"] = "workflow"
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

    @model_validator(mode="after")
    def _agents_or_factory(self) -> WorkflowSpec:
        if self.kind == "python":
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
                path = self.base_dir / ref
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
