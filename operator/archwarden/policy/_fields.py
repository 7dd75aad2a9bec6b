"""Typed reads from Kubernetes JSON that name the offending field when a type is wrong.

JSON ``null`` counts as absent everywhere: clients send it for cleared optional fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from archwarden.policy import _errors

__all__ = ["Reader"]


def _type_name(value: object) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


class Reader:
    """Reads fields for one object; errors are raised as ``error`` (workload or node)."""

    def __init__(self, error: type[_errors.InvalidObject]) -> None:
        self.error = error

    def fail(self, path: str, problem: str) -> _errors.InvalidObject:
        return self.error(path, problem)

    def _expected(self, path: str, what: str, value: object) -> _errors.InvalidObject:
        return self.fail(path, f"expected {what}, got {_type_name(value)}")

    def mapping(self, value: object, path: str) -> Mapping[str, Any]:
        """``value`` as an object; ``{}`` when it is null."""
        if type(value) is dict:  # what JSON decodes to: no ABC check (every review reads dozens)
            return value
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self._expected(path, "an object", value)
        return value

    def optional_mapping(self, value: object, path: str) -> Mapping[str, Any] | None:
        return None if value is None else self.mapping(value, path)

    def list(self, value: object, path: str) -> Sequence[Any]:
        """``value`` as a list; ``[]`` when it is null."""
        if type(value) is list:
            return value
        if value is None:
            return []
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise self._expected(path, "a list", value)
        return value

    def string(self, value: object, path: str, default: str = "") -> str:
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._expected(path, "a string", value)
        return value

    def boolean(self, value: object, path: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self._expected(path, "a boolean", value)
        return value

    def strings(self, value: object, path: str) -> tuple[str, ...]:
        return tuple(
            self.string(item, f"{path}[{i}]") for i, item in enumerate(self.list(value, path))
        )

    def string_map(self, value: object, path: str) -> dict[str, str]:
        """An object of strings (labels, nodeSelector), keys named in errors."""
        return {
            self.string(key, path): self.string(item, f"{path}[{key!r}]")
            for key, item in self.mapping(value, path).items()
        }
