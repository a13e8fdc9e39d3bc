"""Paths in a config file are relative to the file's folder, wherever the gateway is started from.

Applied to every `Path` field of the validated models (key files, TLS files, password files), so
each section's model does not need to know where its file lives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr

from citynerve.gateway.logs import register_secret

M = TypeVar("M", bound=BaseModel)


def resolve_paths(model: M, base: Path) -> M:
    """A copy of `model` with every relative `Path` field (nested models too) made absolute."""
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        new = _resolve(value, base)
        if new is not value:
            updates[name] = new
    return model.model_copy(update=updates) if updates else model


def _resolve(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, BaseModel):
        return resolve_paths(value, base)
    if isinstance(value, tuple):
        items = tuple(_resolve(v, base) for v in value)
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        resolved = {k: _resolve(v, base) for k, v in value.items()}
        return resolved if any(resolved[k] is not value[k] for k in value) else value
    return value


def register_secrets(model: BaseModel) -> None:
    """Tell the log redactor about every secret in `model` (SecretStr fields, nested too)."""
    for name in type(model).model_fields:
        _register(getattr(model, name))


def _register(value: Any) -> None:
    if isinstance(value, SecretStr):
        register_secret(value.get_secret_value())
    elif isinstance(value, BaseModel):
        register_secrets(value)
    elif isinstance(value, tuple | list):
        for v in value:
            _register(v)
    elif isinstance(value, dict):
        for v in value.values():
            _register(v)
