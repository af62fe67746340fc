"""The one root of every flotilla error.

It lives in `audit` because audit is the layer every other package depends on, and every
error a run ends with is recorded there: each subclass carries what the record needs
(`code` for the exit status and the trail, a message that says what to fix).
"""

from __future__ import annotations

__all__ = ["FlotillaError", "InvalidInput", "ConfigError"]


class FlotillaError(Exception):
    """Base class of every error flotilla raises on purpose."""

    code: str = "error"
    """Stable machine-readable name, recorded in runs and the audit trail."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"type": type(self).__name__, "code": self.code, "message": self.message}


class InvalidInput(FlotillaError):
    """The run's input cannot be used (empty, too large, not text, wrong shape)."""

    code = "invalid_input"


class ConfigError(FlotillaError):
    """A workflow file, flotilla.yaml or environment setting is wrong."""

    code = "invalid_config"
