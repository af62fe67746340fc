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
    """The reply does not fit the schema; the message says where, for the repair prompt."""


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
            raise OutputMismatch(
                "; ".join(f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in exc.errors()[:5])
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
            raise OutputMismatch(f"not JSON: {exc.msg} at position {exc.pos}") from None
        errors = sorted(jsonschema.Draft202012Validator(self.schema).iter_errors(value), key=lambda e: list(e.path))
        if errors:
            raise OutputMismatch("; ".join(f"{'.'.join(map(str, e.path)) or 'reply'}: {e.message}" for e in errors[:5]))
        return value

    def dump(self, value: dict[str, Any]) -> dict[str, Any]:
        return value
