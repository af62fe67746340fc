"""What may leave the process: content per policy, and never a secret.

Applied to every span before any exporter sees it (audit store and OTLP alike). Content
attributes (prompts, responses, tool arguments/results) are dropped (`off`), passed through
the PII redactor (`redacted`, default; dropped when no redactor is configured, so nothing
unredacted slips out), or kept (`full`). Secrets are removed under every policy: values of
credential-named keys, bearer/basic credentials, API-key-shaped strings, and the exact
values of the secrets flotilla was configured with.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from flotilla.audit.errors import ConfigError
from flotilla.audit.semconv import CONTENT_KEYS, CONTENT_PREFIX

__all__ = ["ContentPolicy", "Sanitizer", "REDACTED", "is_content"]

REDACTED = "[REDACTED]"
REDACTED_CACHE_CHARS = 4_000_000
"""What the redacted-content cache may hold (raw + redacted characters); the oldest go first.
Its hits are a run's texts met again by the run store and the exporter while the run is in flight
or awaiting export: with 100 runs in flight they reach back ~1M characters (bench_orchestration).
4M keeps four times that (~4-8 MB); what falls out is redacted again, never lost."""

log = logging.getLogger(__name__)


_PLAIN, _CONTENT, _SECRET = 0, 1, 2


class ContentPolicy(StrEnum):
    OFF = "off"
    REDACTED = "redacted"
    FULL = "full"

    @classmethod
    def parse(cls, value: str | ContentPolicy) -> ContentPolicy:
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ConfigError(f"audit content policy {value!r} is not one of off, redacted, full") from None


# Key names whose values are credentials whatever they look like.
_SECRET_KEY = re.compile(
    r"(^|[._\-])(authorization|proxy-authorization|api[_\-]?key|apikey|x-api-key|access[_\-]?token|auth[_\-]?token|"
    r"refresh[_\-]?token|id[_\-]?token|token|bearer|secret|client[_\-]?secret|password|passwd|cookie|set-cookie|"
    r"credentials?|private[_\-]?key)($|[._\-])",
    re.IGNORECASE,
)
# Values that look like credentials wherever they appear.
_SECRET_VALUE = re.compile(
    r"(?i:\b(?:bearer|basic|token)\s+[A-Za-z0-9._~+/=\-]{8,})"
    r"|(?i:\b(?:authorization|api[_\-]?key|x-api-key|access[_\-]?token|secret|password)\b\s*[:=]\s*[\"']?[^\s\"',;}]{6,})"
    r"|\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bxox[abpr]-[A-Za-z0-9\-]{10,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bAIza[0-9A-Za-z_\-]{30,}"
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
)

# A literal each alternative of `_SECRET_VALUE` contains (lower-cased: the test runs on lower-cased text).
_SECRET_WORDS = (
    "bearer", "basic", "token", "authorization", "api", "secret", "password", "sk-",
    "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "akia", "aiza", "eyj",
)
# The non-ASCII letters `re.IGNORECASE` matches to an ASCII one that `str.lower` does not map to it.
_ASCII_FOLD = str.maketrans({"ſ": "s", "ı": "i", "İ": "i", "K": "k"})


class Sanitizer:
    """Turns span attributes into what may be recorded."""

    def __init__(
        self,
        policy: ContentPolicy | str = ContentPolicy.REDACTED,
        *,
        redact: Callable[[str], str] | None = None,
        redact_many: Callable[[Sequence[str]], list[str]] | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.policy = ContentPolicy.parse(policy)
        self.redact = redact
        self.redact_many = redact_many
        """Redacts a batch at once (spaCy's nlp.pipe); `prime` uses it, else `redact` per text."""
        # Redacted content by raw text: both exporters, the run store and every step's repeated
        # prompt share one redaction. Only texts the redactor vouched for are remembered.
        self._redacted: OrderedDict[str, str] = OrderedDict()
        self._redacted_chars = 0
        self._redacted_lock = threading.Lock()
        # Longest first so a secret containing another is removed whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._key_kinds: dict[str, int] = {}
        self._seen: dict[str, str] = {}

    @property
    def redacts(self) -> bool:
        """True when content is kept PII-redacted (the `redacted` policy with a redactor)."""
        return self.policy is ContentPolicy.REDACTED and (self.redact is not None or self.redact_many is not None)

    def attributes(self, attrs: Mapping[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not attrs:
            return out
        for key, value in attrs.items():
            kind = self._key_kinds.get(key)
            if kind is None:
                kind = _CONTENT if _is_content(key) else _SECRET if self.secret_key(key) else _PLAIN
                if len(self._key_kinds) < 10_000:
                    self._key_kinds[key] = kind
            if kind == _CONTENT:
                value = self._content(value)
                if value is None:
                    continue
            elif kind == _SECRET:
                out[key] = REDACTED
                continue
            out[key] = self._scrub_value(value)
        return out

    @staticmethod
    def secret_key(key: str) -> bool:
        """True when a key names a credential (its value is never recorded)."""
        return bool(_SECRET_KEY.search(key)) and not key.startswith("gen_ai.usage.")

    def text(self, value: str | None) -> str | None:
        """Scrub free text such as a status description or exception message."""
        return None if value is None else self.scrub(value)

    def scrub(self, text: str) -> str:
        if len(text) < 8:  # shorter than any secret shape or configured secret worth matching
            return text if not any(s in text for s in self.secrets) else self._scrub(text)
        if len(text) <= 200:  # names, models, ids repeat endlessly: remember their verdict
            cached = self._seen.get(text)
            if cached is None:
                cached = self._scrub(text)
                if len(self._seen) < 50_000:
                    self._seen[text] = cached
            return cached
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        lowered = text.translate(_ASCII_FOLD).lower()
        # Every shape `_SECRET_VALUE` matches holds one of these words: substring tests (C speed)
        # spare the regex's scan of long prompts and replies, which hold none of them.
        if any(word in lowered for word in _SECRET_WORDS) and _SECRET_VALUE.search(text):
            text = _SECRET_VALUE.sub(REDACTED, text)
        return text

    def _scrub_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) if isinstance(v, str) else v for v in value]
        return value

    def content(self, value: Any) -> Any:
        """A content value (text or a list of texts) as the policy lets it be kept, secrets scrubbed;
        None when it may not be kept. What the run store applies to inputs and outputs."""
        value = self._content(value)
        return None if value is None else self._scrub_value(value)

    def error(self, error: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """An error record as it may be kept. Its own fields (type, code, message, engine, …) are
        flotilla's text: kept under every policy, secrets scrubbed — never PII-redacted, which
        mangles messages ("Invalid JSON" reads as a person's name). The user content it quotes
        (`quoted`, see `FlotillaError.quoted`) is content: kept, redacted or dropped per policy."""
        if error is None:
            return None
        kept = {key: self._scrub_value(value) for key, value in error.items() if key != "quoted"}
        quoted = self.content(error["quoted"]) if error.get("quoted") is not None else None
        if quoted is not None:
            kept["quoted"] = quoted
        return kept

    def passthrough(self) -> Sanitizer:
        """For spans this sanitizer already cleaned (a second exporter): content kept as it is, secrets scrubbed."""
        return Sanitizer(ContentPolicy.FULL, secrets=self.secrets)

    def prime(self, texts: Iterable[str]) -> None:
        """Redact, as one batch, the content texts about to be sanitized (an export batch), so the
        per-attribute pass finds them done. A failure here only loses the head start."""
        if self.policy is not ContentPolicy.REDACTED or self.redact_many is None:
            return
        with self._redacted_lock:
            todo = list(dict.fromkeys(t for t in texts if t not in self._redacted))
        if not todo:
            return
        try:
            done = self.redact_many(todo)
        except Exception:
            log.exception("batched PII redaction failed; texts are redacted one by one")
            return
        self._remember(zip(todo, done))

    def _remember(self, pairs: Iterable[tuple[str, str]]) -> None:
        with self._redacted_lock:
            for raw, redacted in pairs:
                old = self._redacted.pop(raw, None)
                if old is not None:
                    self._redacted_chars -= len(raw) + len(old)
                self._redacted[raw] = redacted
                self._redacted_chars += len(raw) + len(redacted)
            while self._redacted_chars > REDACTED_CACHE_CHARS and self._redacted:
                raw, redacted = self._redacted.popitem(last=False)
                self._redacted_chars -= len(raw) + len(redacted)

    def _redact_text(self, text: str) -> str:
        with self._redacted_lock:
            done = self._redacted.get(text)
        if done is not None:
            return done
        assert self.redact is not None or self.redact_many is not None
        done = self.redact(text) if self.redact is not None else self.redact_many([text])[0]  # type: ignore[misc]
        self._remember([(text, done)])
        return done

    def _content(self, value: Any) -> Any:
        if self.policy is ContentPolicy.OFF:
            return None
        if self.policy is ContentPolicy.FULL:
            return value
        if self.redact is None and self.redact_many is None:
            return None
        try:
            if isinstance(value, str):
                return self._redact_text(value)
            if isinstance(value, (list, tuple)):
                return [self._redact_text(v) if isinstance(v, str) else v for v in value]
            return None  # not text: nothing the redactor could vouch for
        except Exception:  # a failing redactor must not leak content, nor lose the span
            log.exception("PII redaction failed; the content attribute is dropped")
            return None


def is_content(key: str) -> bool:
    """True for attributes that carry prompts, responses, tool arguments or results."""
    return _is_content(key)


def _is_content(key: str) -> bool:
    return key in CONTENT_KEYS or key.startswith(CONTENT_PREFIX)
