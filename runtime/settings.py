"""Settings: flotilla.yaml, overridden by FLOTILLA_* environment variables.

`FLOTILLA_MODELS__SPECIALIST_EXTRACT__BASE_URL=http://…/v1` overrides
`models: {specialist-extract: {base_url: …}}` (underscores in alias names match hyphens).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from flotilla.agents.models.policy import ModelPrice, PriceTable
from flotilla.agents.models.registry import ModelEndpoint
from flotilla.audit.errors import ConfigError
from flotilla.mcp_servers.bundled import bundled_servers
from flotilla.runtime.api_auth import ApiToken
from flotilla.runtime.settings_temporal import TemporalSettings
from flotilla.tools.config import McpServerConfig

__all__ = ["Settings", "load_settings", "DEFAULT_ALIASES"]

DEFAULT_ALIASES = (
    "specialist-extract",
    "specialist-analyze",
    "specialist-decide",
    "specialist-write",
    "frontier",
)


def _default_models() -> dict[str, ModelEndpoint]:
    return {alias: ModelEndpoint() for alias in DEFAULT_ALIASES}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOTILLA_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("flotilla")))
    """Runs, checkpoints and traces live here."""
    cache_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_cache_dir("flotilla")))
    """Dequantised embedded-model weights are cached here."""
    max_input_bytes: int = Field(default=1_000_000, gt=0)
    models: dict[str, ModelEndpoint] = Field(default_factory=_default_models)
    mcp_servers: dict[str, McpServerConfig] = Field(default_factory=bundled_servers)
    """MCP servers agents may use, by name (tools are `name.tool`); see tools/config.py. The bundled
    `ledger` and `documents` servers are always configured (an entry of the same name replaces them)."""
    workflows: dict[str, str] = Field(default_factory=dict)
    """Python workflows by name: `invoice_py: mypkg.flows:build_graph` (a graph factory, see
    graphs/factory.py). `flotilla run`, `validate` and the MCP gateway treat them like YAML ones."""
    embedded_max_tokens: int = Field(default=1024, gt=0)
    """Upper bound on any one embedded-model reply (agents set their own, lower, limits)."""
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """USD per million tokens by model alias (`frontier: {input_per_mtok: 3, output_per_mtok: 15}`):
    the cost on each chat span, run totals, and the all-frontier counterfactual."""
    audit_url: str | None = None
    """Audit store (SQLAlchemy URL); default sqlite:///<data_dir>/audit.sqlite. Postgres: postgresql+psycopg://…"""
    runs_url: str | None = None
    """Run records and the tool-call journal (SQLAlchemy URL); default sqlite:///<data_dir>/runs.sqlite.
    PostgreSQL (postgresql+psycopg://…) when `flotilla serve` and `flotilla worker`s on several machines share them."""
    audit_content: Literal["off", "redacted", "full"] = "redacted"
    """What prompt/response/tool content the audit trail, OTLP, the trace file and the run store keep."""
    trace_max_bytes: int = Field(default=50_000_000, ge=0)
    """`<data_dir>/traces.jsonl` rotates at this size (0: never); `audit prune` also trims it by date."""
    trace_backups: int = Field(default=3, ge=1)
    """Rotated trace files kept beside it (traces.jsonl.1 … .N); the oldest is deleted."""
    audit_hmac_key: SecretStr | None = None
    """FLOTILLA_AUDIT_HMAC_KEY: signs the chain head and prune checkpoints."""
    audit_token: SecretStr | None = None
    """FLOTILLA_AUDIT_TOKEN: the compliance role's token for the /audit web page."""
    metrics: bool = True
    """FLOTILLA_METRICS: live per-specialist metrics (Prometheus `/metrics` on `flotilla serve`, OTLP when configured)."""
    metrics_token: SecretStr | None = None
    """FLOTILLA_METRICS_TOKEN: bearer token a scraper sends to `/metrics` (the audit token is accepted too)."""
    api_tokens: dict[str, ApiToken] = Field(default_factory=dict)
    """Named bearer tokens of the HTTP run API (`/v1/runs`), by the env variable holding each secret:
    `alice: {token_env: ALICE_TOKEN, scopes: [read, approve]}`; the name is the approver's name."""
    api_token: SecretStr | None = None
    """FLOTILLA_API_TOKEN: one token with every run-API scope (submit, read, approve), for a single user."""
    max_concurrent_runs: int = Field(default=32, gt=0)
    """Runs the local backend executes at once (`flotilla serve`); later submissions wait as `pending`."""
    backend: Literal["local", "postgres", "temporal"] = "local"
    """Where runs execute: `local` (in-process runner, SQLite checkpoints, crash recovery), `postgres`
    (the same runner with LangGraph's Postgres checkpointer at `checkpoint_url`), `temporal`."""
    checkpoint_url: str | None = Field(default=None, validate_default=True)
    """LangGraph checkpointer: a SQLite path (default <data_dir>/checkpoints.sqlite) or postgresql://…"""
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    """The temporal backend: `temporal: {address, namespace, task_queue}` (runtime/settings_temporal.py)."""
    config_file: Path | None = None

    @property
    def price_table(self) -> PriceTable:
        return PriceTable({alias.lower().replace("_", "-"): price for alias, price in self.prices.items()})

    @property
    def audit_store_url(self) -> str:
        return self.audit_url or f"sqlite:///{self.data_dir / 'audit.sqlite'}"

    @property
    def run_store_url(self) -> str:
        return self.runs_url or f"sqlite:///{self.data_dir / 'runs.sqlite'}"

    @field_validator("runs_url", mode="after")
    @classmethod
    def _runs_url_is_a_database_url(cls, value: str | None) -> str | None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            value is None or make_url(value)
        except ArgumentError:
            raise PydanticCustomError("runs_url", "not a database URL: write sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB") from None
        return value

    @field_validator("checkpoint_url", mode="after")
    @classmethod
    def _postgres_backend_needs_postgres(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("backend") == "postgres" and not (value or "").startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise PydanticCustomError("postgres_backend", "the postgres backend keeps checkpoints in PostgreSQL: set checkpoint_url: postgresql://USER@HOST:PORT/DB")
        return value

    @field_validator("mcp_servers", mode="after")
    @classmethod
    def _with_bundled_servers(cls, value: dict[str, McpServerConfig]) -> dict[str, McpServerConfig]:
        return {**bundled_servers(), **value}

    @field_validator("models", mode="before")
    @classmethod
    def _normalise_aliases(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {}
        for alias, endpoint in value.items():
            key = str(alias).lower().replace("_", "-")
            if isinstance(endpoint, ModelEndpoint):
                endpoint = endpoint.model_dump(exclude_unset=True)
            merged.setdefault(key, {}).update(endpoint or {})
        return merged

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = _config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def _config_path() -> Path | None:
    explicit = os.environ.get("FLOTILLA_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path.cwd() / "flotilla.yaml"
    return local if local.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Settings from flotilla.yaml (or $FLOTILLA_CONFIG) and the environment, or a ConfigError."""
    path = _config_path()
    if path is not None and not path.is_file():
        raise ConfigError(f"$FLOTILLA_CONFIG points at {path}, which does not exist")
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings{where}: {problems}") from None
    except Exception as exc:  # malformed YAML surfaces as yaml.YAMLError from the source
        raise ConfigError(f"cannot read {path}: {exc}") from None
    settings.config_file = path
    if "frontier" not in settings.models:
        settings.models["frontier"] = ModelEndpoint()
    return settings
