"""The sections of a workflow spec that only one `kind:` reads: `research:` and `router:`.

Kept apart from graphs/spec.py (which re-exports every name) so that module stays the shape of a
plain workflow; graphs/research.py and graphs/router.py are what act on these settings.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ResearchSettings", "RouterSettings", "RouteSpec", "ROUTE_TO_FALLBACK", "NEEDS_REVIEW", "MAX_SUB_AGENTS"]


class _Strict(BaseModel):  # as strict as graphs/spec.py: an unknown key is an error
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


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


ROUTE_TO_FALLBACK = "fallback"
"""A route whose `to:` is this sends its requests to the router's `fallback` (out-of-scope labels)."""
NEEDS_REVIEW = "needs_review"
"""A router `fallback:` that ends the run `needs_review` with the scores as the reason."""


class RouteSpec(_Strict):
    """One label of a router: where its requests go, and examples of them."""

    to: str
    """A workflow (built-in name, or a YAML path relative to the router file), or `fallback`."""
    description: str = ""
    examples: list[str] = Field(default_factory=list)
    """Example requests, added to those in the router's `examples:` file under this label."""


class RouterSettings(_Strict):
    """`kind: router`: a classifier trained from the examples sends each request to one route."""

    routes: dict[str, RouteSpec]
    examples: str | None = None
    """A YAML file (relative to the workflow file) mapping each label to a list of example requests."""
    threshold: float = Field(default=0.5, gt=0, lt=1)
    """Below this confidence the request goes to `fallback`."""
    fallback: str = NEEDS_REVIEW
    """A workflow (like `to:`), or `needs_review`: the run ends needing review, the scores as the reason."""
    max_chars: int = Field(default=1000, ge=50, le=100_000)
    """Characters of the request the classifier reads (the opening says what a document is)."""
