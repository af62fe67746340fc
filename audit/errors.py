"""The one root of every flotilla error.

It lives in `audit` because audit is the layer every other package depends on, and every
error a run ends with is recorded there: each subclass carries what the record needs
(`code` for the exit status and the trail, a message that says what to fix).
"""

from __future__ import annotations

from importlib.util import find_spec

__all__ = ["FlotillaError", "InvalidInput", "ConfigError", "MissingExtra"]


class FlotillaError(Exception):
    """Base class of every error flotilla raises on purpose."""

    code: str = "error"
    """Stable machine-readable name, recorded in runs and the audit trail."""

    def __init__(self, message: str, *, quoted: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.quoted = quoted
        """User content the message is about (the model's reply, a bad value), kept out of the
        message: records keep flotilla's message intact and redact only this, per content policy."""

    def to_dict(self) -> dict[str, str]:
        record = {"type": type(self).__name__, "code": self.code, "message": self.message}
        if self.quoted is not None:
            record["quoted"] = self.quoted
        return record


class InvalidInput(FlotillaError):
    """The run's input cannot be used (empty, too large, not text, wrong shape)."""

    code = "invalid_input"


class ConfigError(FlotillaError):
    """A workflow file, flotilla.yaml or environment setting is wrong."""

    code = "invalid_config"


class MissingExtra(ConfigError):
    """A feature needs an optional part of flotilla (an extra) that is not installed.

        MissingExtra.require("the embedded model", "embedded", "torch", "transformers")
    """

    code = "missing_extra"

    def __init__(self, feature: str, extra: str, missing: tuple[str, ...] = ()) -> None:
        hint = f" ({', '.join(missing)} not installed)" if missing else ""
        super().__init__(f"{feature} needs flotilla[{extra}]{hint}: pip install 'flotilla[{extra}]'")
        self.feature, self.extra, self.missing = feature, extra, missing

    @classmethod
    def check(cls, feature: str, extra: str, *modules: str) -> MissingExtra | None:
        """The error to raise (or report) when any of `modules` is absent; None when all are there.
        Looks modules up without importing them, so asking is cheap."""
        missing = tuple(m for m in modules if not _installed(m))
        return cls(feature, extra, missing) if missing else None

    @classmethod
    def require(cls, feature: str, extra: str, *modules: str) -> None:
        if (error := cls.check(feature, extra, *modules)) is not None:
            raise error


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or an import hook refuses it
        return False
