"""The `temporal:` section of flotilla.yaml (the temporal run backend and `flotilla worker`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TemporalSettings"]


class TemporalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = "127.0.0.1:7233"
    """The Temporal frontend (`host:port`); FLOTILLA_TEMPORAL__ADDRESS overrides it."""
    namespace: str = "default"
    task_queue: str = "flotilla"
    """Where `flotilla run --backend temporal` / `serve` submit runs and `flotilla worker` takes them."""
    step_timeout_s: float = Field(default=600, gt=0)
    """Start-to-close timeout of a step's activity when its agent sets no `timeout_s` (then: timeout_s x tiers + 60 s)."""
    heartbeat_s: float = Field(default=2, gt=0)
    """How often a running step heartbeats."""
    heartbeat_timeout_s: float = Field(default=10, gt=0)
    """A step whose worker has not heartbeat for this long is retried elsewhere (a killed worker)."""
    max_attempts: int = Field(default=3, ge=1)
    """Attempts per step activity (the model SDK's own retries are off under the temporal backend)."""
    max_concurrent_activities: int = Field(default=32, ge=1)
    """Steps one worker runs at once."""
    connect_timeout_s: float = Field(default=5, gt=0)
    """How long submitting waits for the Temporal server before answering BackendUnavailable."""
