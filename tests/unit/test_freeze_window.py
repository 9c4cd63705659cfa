"""The freeze window thaws in every case, and at the deadline even if the snapshot hangs."""

from __future__ import annotations

import time

import pytest

from agent.errors import OperationFailed
from agent.operations.quiesce import FreezeWindow
from tests.unit.fakes import FakeGuest


def test_close_thaws_and_measures_the_window():
    guest = FakeGuest()
    window = FreezeWindow(guest, deadline=5, clock=time.monotonic, domain="vm")
    window.start()
    assert guest.frozen
    window.close()
    assert not guest.frozen and not window.watchdog_fired
    assert 0 <= window.frozen_seconds < 1


def test_watchdog_thaws_at_the_deadline_while_the_snapshot_call_hangs():
    guest = FakeGuest()
    window = FreezeWindow(guest, deadline=0.2, clock=time.monotonic, domain="vm")
    window.start()
    assert guest.thawed.wait(timeout=5), "the watchdog did not thaw"
    assert window.watchdog_fired
    window.close()  # the hung call returns later: no second thaw needed
    assert guest.thaws == 1


def test_a_guest_that_stays_frozen_is_an_error_that_says_how_to_recover():
    guest = FakeGuest(stuck_frozen=True)
    window = FreezeWindow(guest, deadline=5, clock=time.monotonic, domain="vm")
    window.start()
    with pytest.raises(OperationFailed, match="virsh domfsthaw vm"):
        window.close()
    assert guest.thaws == 3
