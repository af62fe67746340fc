"""An agent's output contract: a pydantic model or a plain JSON Schema, behind one interface."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import jsonschema
from pydantic import BaseModel, ValidationError

__all__ = ["OutputSchema", "PydanticOutput", "JsonSchemaOutput", "OutputMismatch"]


class OutputMismatch(ValueError):
    """The reply does not fit the schema; the message says where, for the repair prompt.

    The message names places and rules, never the reply's values (pydantic's `msg` never quotes
    the input; jsonschema's does, see `_without_value`): it is flotilla's text, recorded intact.
    The offending values travel in `quoted`: content, recorded per policy."""

    def __init__(self, message: str, *, quoted: str | None = None) -> None:
        super().__init__(message)
        self.quoted = quoted


class OutputSchema(Protocol):
    name: str

    @property
    def json_schema(self) -> dict[str, Any]: ...

    def parse(self, text: str) -> Any:
        """The validated value (raises OutputMismatch)."""

    def dump(self, value: Any) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class PydanticOutput:
    model: type[BaseModel]

    @property
    def name(self) -> str:
        return self.model.__name__

    @property
    def json_schema(self) -> dict[str, Any]:
        return _schema_of(self.model)

    def parse(self, text: str) -> BaseModel:
        try:
            return self.model.model_validate_json(text)
        except ValidationError as exc:
            errors = exc.errors()[:5]
            raise OutputMismatch(
                "; ".join(f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in errors),
                # An error at the root (not JSON at all) is about the whole reply.
                quoted=_quote([('.'.join(map(str, e['loc'])) or 'reply', e['input'] if e['loc'] else text) for e in errors]),
            ) from None

    def dump(self, value: BaseModel) -> dict[str, Any]:
        return value.model_dump(mode="json")


@lru_cache(maxsize=256)
def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    # Generating a schema costs milliseconds; it is shared and must be treated as read-only.
    return model.model_json_schema()


@dataclass(frozen=True, slots=True)
class JsonSchemaOutput:
    schema: dict[str, Any]
    name: str = "output"

    @property
    def json_schema(self) -> dict[str, Any]:
        return self.schema

    def parse(self, text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OutputMismatch(f"not JSON: {exc.msg} at position {exc.pos}", quoted=_quote([("reply", text)])) from None
        errors = sorted(jsonschema.Draft202012Validator(self.schema).iter_errors(value), key=lambda e: list(e.path))
        if errors:
            raise OutputMismatch(
                "; ".join(f"{'.'.join(map(str, e.path)) or 'reply'}: {_without_value(e)}" for e in errors[:5]),
                quoted=_quote([(".".join(map(str, e.path)) or "reply", e.instance) for e in errors[:5]]),
            )
        return value

    def dump(self, value: dict[str, Any]) -> dict[str, Any]:
        return value


def _without_value(error: jsonschema.ValidationError) -> str:
    """jsonschema's message with the offending value left out (`'Jane' is not one of [...]` →
    `the value is not one of [...]`): the value is the model's content, not flotilla's message."""
    shown = repr(error.instance)
    return error.message.replace(shown, "the value", 1) if shown in error.message else error.message


def _quote(values: list[tuple[str, Any]], limit: int = 200) -> str:
    """`where: value` for each offending value, each cut to `limit` characters."""
    parts = []
    for where, value in values:
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        parts.append(f"{where}: {shown[:limit]}{'…' if len(shown) > limit else ''}")
    return "; ".join(parts)
