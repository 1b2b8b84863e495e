"""FHIR search values built from data stay one value; engine names come from the catalog only."""

from __future__ import annotations

from typing import get_args
from urllib.parse import parse_qsl

import pytest

from tools.fhir.builders import uid_search_token
from tools.fhir.search_values import condition, escape_value, token
from tools.fhir.task import task_token
from tools.segmentation.catalog import EngineName, UnknownEngineError, check_engine_name, engine_names

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain-1.2", "plain-1.2"),
        ("a,b", "a\\,b"),
        ("sys|code", "sys\\|code"),
        ("x$y", "x\\$y"),
        ("back\\slash", "back\\\\slash"),
        ("\\,", "\\\\\\,"),
    ],
)
def test_escape_value_follows_fhir_r4_search_escaping(value: str, escaped: str) -> None:
    assert escape_value(value) == escaped


def test_tokens_escape_system_and_code_but_keep_their_separator() -> None:
    assert token("urn:x", "a,b|c") == "urn:x|a\\,b\\|c"
    assert token(None, "MRN,1") == "MRN\\,1"
    assert uid_search_token("1.2.3") == "urn:dicom:uid|urn:oid:1.2.3"
    injected = "x,urn:imaging-agent:task|abc"
    assert task_token("1.2.3", injected) == "urn:imaging-agent:task|1.2.3/x\\,urn:imaging-agent:task\\|abc"


def test_a_condition_is_one_parameter_whatever_the_value() -> None:
    value = token("urn:x", "a&_id=b#c+d%e f")
    text = condition("identifier", value)
    assert parse_qsl(text, keep_blank_values=True) == [("identifier", value)]
    assert condition("identifier", uid_search_token("1.2.3")) == "identifier=urn:dicom:uid|urn:oid:1.2.3"


def test_engine_names_are_one_list() -> None:
    assert sorted(get_args(EngineName)) == engine_names()
    assert check_engine_name("lung-threshold") == "lung-threshold"
    with pytest.raises(UnknownEngineError, match="unknown segmentation engine 'x,y'.*lung-threshold, medimageparse"):
        check_engine_name("x,y")
    assert issubclass(UnknownEngineError, ValueError)
