"""A query that meets a change made by another actor reads again; a lasting failure is one."""

from __future__ import annotations

import pytest

from agent.errors import InvalidArgument, OperationFailed
from agent.operations import reread


def test_a_read_that_met_a_change_is_read_again():
    calls: list[int] = []

    def read() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise OperationFailed("qemu-img: Could not open 'layer': No such file")
        return "listed"

    assert reread.read_consistently(read, "domain d") == "listed"
    assert len(calls) == 2


def test_a_lasting_failure_is_raised_after_the_last_attempt():
    calls: list[int] = []

    def read() -> str:
        calls.append(1)
        raise OperationFailed("still broken")

    with pytest.raises(OperationFailed, match="still broken"):
        reread.read_consistently(read, "domain d")
    assert len(calls) == reread.ATTEMPTS


def test_bad_input_is_not_read_again():
    calls: list[int] = []

    def read() -> str:
        calls.append(1)
        raise InvalidArgument("not a domain name")

    with pytest.raises(InvalidArgument):
        reread.read_consistently(read, "domain d")
    assert len(calls) == 1
