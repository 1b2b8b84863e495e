"""A function run in a forked child (tools/forked.py): its result, its failures, its death."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from tools.forked import ForkedCall, ForkedCallError

pytestmark = pytest.mark.unit


def test_the_child_sees_the_parents_array_and_answers_after_a_message() -> None:
    volume = np.arange(1_000_000, dtype=np.int32)

    def child(receive):
        factor = receive()
        return int(volume.sum()) * factor, os.getpid()

    with ForkedCall(child, "summing the test volume") as call:
        call.send(3)
        total, child_pid = call.result()
    assert total == int(volume.sum()) * 3
    assert child_pid != os.getpid()


def test_an_exception_in_the_child_is_raised_in_the_parent_with_what_and_where() -> None:
    def child(receive):
        raise ValueError("series 1.2.3 has no slices")

    with ForkedCall(child, "building the objects of series 1.2.3") as call, pytest.raises(ForkedCallError) as raised:
        call.result()
    message = str(raised.value)
    assert "building the objects of series 1.2.3 failed" in message
    assert "ValueError: series 1.2.3 has no slices" in message
    assert "test_forked.py" in message


def test_a_killed_child_is_reported_not_waited_for_forever() -> None:
    def child(receive):
        os.kill(os.getpid(), signal.SIGKILL)

    with ForkedCall(child, "building the objects of series 1.2.3") as call, pytest.raises(ForkedCallError) as raised:
        call.result()
    assert "stopped without a result (killed by signal 9)" in str(raised.value)


def test_leaving_early_kills_and_reaps_a_child_still_waiting_for_its_message() -> None:
    def child(receive):
        return receive()

    with pytest.raises(RuntimeError, match="QA failed"), ForkedCall(child, "waiting") as call:
        pid = call._pid
        raise RuntimeError("QA failed in the parent")
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_a_message_to_a_child_that_has_ended_leaves_the_childs_own_error_to_report() -> None:
    def child(receive):
        raise ValueError("SEG of series 1.2.3 could not be built")

    with ForkedCall(child, "building the SEG") as call:
        call.send({"left-lung": 1800.0})
        with pytest.raises(ForkedCallError, match="SEG of series 1.2.3 could not be built"):
            call.result()
