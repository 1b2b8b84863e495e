"""The checkpoint serializer: a checkpoint revives only the types the graphs' states are declared to hold.

LangGraph's default serializer imports and calls any class a checkpoint names. Whoever can write the
state file (another local account, a restored backup, a copied run directory) could then make the
next `process` or `approvals` run arbitrary code when it resumes a job. Strict msgpack with an
allowlist closes that: the list is found from the state annotations themselves, so a new record type
in a state is allowed by declaring it there, and nothing else is.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Iterable, Iterator
from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel


def checkpoint_serializer(state_types: Iterable[type]) -> JsonPlusSerializer:
    """A strict serializer that revives the pydantic models and enums reachable from `state_types`."""
    allowed = sorted(set(_revivable_types(state_types)), key=lambda kind: (kind.__module__, kind.__qualname__))
    return JsonPlusSerializer(allowed_msgpack_modules=allowed)


def _revivable_types(roots: Iterable[Any]) -> Iterator[type]:
    seen: set[int] = set()
    pending = list(roots)
    while pending:
        annotation = pending.pop()
        if id(annotation) in seen:
            continue
        seen.add(id(annotation))
        pending.extend(typing.get_args(annotation))
        if not isinstance(annotation, type):
            continue
        if issubclass(annotation, BaseModel):
            yield annotation
            pending.extend(field.annotation for field in annotation.model_fields.values())
        elif issubclass(annotation, enum.Enum):
            yield annotation
        elif typing.is_typeddict(annotation):
            pending.extend(typing.get_type_hints(annotation, include_extras=True).values())
