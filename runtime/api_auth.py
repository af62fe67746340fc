"""Bearer tokens of the HTTP run API: who is calling, and what they may do (submit, read, approve).

Named tokens live in flotilla.yaml by the environment variable holding their secret, never the
secret itself:

    api_tokens:
      alice: {token_env: ALICE_TOKEN, scopes: [read, approve]}
      intake: {token_env: INTAKE_TOKEN, scopes: [submit, read]}

and `FLOTILLA_API_TOKEN` grants all three scopes for a single-user setup (its caller is named
`default`). A token's name is the approver's name in the audit chain. No FastAPI here: the
settings import this module.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from flotilla.audit.errors import ConfigError

__all__ = ["ApiToken", "Caller", "TokenTable", "SCOPES", "Scope", "API_TOKEN_ENV", "DEFAULT_CALLER"]

Scope = Literal["submit", "read", "approve"]
SCOPES: tuple[Scope, ...] = ("submit", "read", "approve")
API_TOKEN_ENV = "FLOTILLA_API_TOKEN"
DEFAULT_CALLER = "default"
"""The name FLOTILLA_API_TOKEN's caller acts under (and approves as)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class ApiToken(BaseModel):
    """One named token of `api_tokens:` in flotilla.yaml."""

    model_config = ConfigDict(extra="forbid")

    token_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The environment variable holding the secret (never the secret itself)."""
    scopes: list[Scope] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes


class TokenTable:
    """Secrets → callers; a presented token is compared with every secret in constant time."""

    def __init__(self, entries: Mapping[str, tuple[str, frozenset[str]]]) -> None:
        self._entries = [(secret.encode(), Caller(name, scopes)) for name, (secret, scopes) in entries.items()]

    @classmethod
    def from_settings(cls, tokens: Mapping[str, ApiToken], single: SecretStr | None) -> TokenTable:
        """The configured tokens; a ConfigError naming what to fix for an unset variable, a bad
        name, or two names sharing one secret (who approved would be ambiguous)."""
        entries: dict[str, tuple[str, frozenset[str]]] = {}
        for name, token in tokens.items():
            if not _NAME.match(name):
                raise ConfigError(f"api_tokens: {name!r} is not a usable name (letters, digits, `_.@-`, up to 64): it is the approver's name in the audit trail")
            secret = os.environ.get(token.token_env, "")
            if not secret:
                raise ConfigError(f"api_tokens.{name}: ${token.token_env} is not set; export the token's secret in it (or remove the entry)")
            entries[name] = (secret, frozenset(token.scopes))
        if single is not None and single.get_secret_value():
            if DEFAULT_CALLER in entries:
                raise ConfigError(f"api_tokens: {DEFAULT_CALLER!r} is the name of ${API_TOKEN_ENV}'s caller; rename that entry")
            entries[DEFAULT_CALLER] = (single.get_secret_value(), frozenset(SCOPES))
        secrets = [secret for secret, _ in entries.values()]
        if len(set(secrets)) != len(secrets):
            raise ConfigError("api_tokens: two names share one secret; give each caller its own token")
        return cls(entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def secrets_with(self, scope: str) -> dict[str, str]:
        """Secret → name of every token with `scope` (the audit page's approver sign-in)."""
        return {secret.decode(): caller.name for secret, caller in self._entries if caller.may(scope)}

    def identify(self, presented: str) -> Caller | None:
        """The caller a bearer token belongs to, or None; every secret is compared (no early exit)."""
        found = None
        candidate = presented.encode()
        for secret, caller in self._entries:
            if hmac.compare_digest(candidate, secret):
                found = caller
        return found
