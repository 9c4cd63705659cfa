"""The open intents after the volumes were looked at: those of volumes fixed in this pass,
and those older than the threshold, closed when the agent's view justifies it (with `fix`),
else reported."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from controller.reconcile.report import IntentRow, VolumeRow, VolumeStatus
from controller.store import Intent, IntentState, Lease, StaleClaim, Store

log = logging.getLogger(__name__)

SETTLED = (VolumeStatus.IN_LINE, VolumeStatus.FIXED)


def settle_intents(
    store: Store,
    lease: Lease | None,
    intents: Sequence[Intent],
    rows: Mapping[str, VolumeRow],
    *,
    now: datetime,
    older_than: float,
    job_final: Callable[[str], bool],
) -> list[IntentRow]:
    """`lease` None: nothing is written (the pass runs without fix)."""
    report: list[IntentRow] = []
    for intent in intents:
        age = (now - intent.created_at).total_seconds()
        row = rows.get(intent.volume_id)
        fixed_now = row is not None and row.status is VolumeStatus.FIXED
        if age < older_than and not fixed_now:
            continue
        action, detail = _decide(intent, row, job_final(intent.job_id))
        if lease is not None and action in ("apply", "abandon"):
            action, detail = _write(store, lease, intent, row, action, detail)
        elif action in ("apply", "abandon"):
            action = f"would {action}"
        report.append(
            IntentRow(
                intent.id,
                intent.job_id,
                intent.volume_id,
                str(intent.state),
                intent.new_path,
                round(age, 3),
                action,
                detail,
            )
        )
    return report


def _decide(intent: Intent, row: VolumeRow | None, final: bool) -> tuple[str, str]:
    """("apply" | "abandon" | "left open" | "flagged", why)."""
    if not final:
        return "left open", "its job is still in flight"
    if row is None:
        return (
            "flagged",
            "cannot confirm the active image: the VM is not running on a reachable agent",
        )
    if row.status not in SETTLED:
        pending = row.status in (VolumeStatus.STALE, VolumeStatus.BUSY, VolumeStatus.FIX_FAILED)
        return "left open" if pending else "flagged", f"volume is {row.status}: {row.detail}"
    current = row.expected_path
    if intent.state is IntentState.CHANGED:
        if intent.new_path == current:
            return "apply", f"CloudStack records {current}, the agent's active image"
        return "abandon", f"superseded: the active image is now {current}, not {intent.new_path}"
    if current == intent.previous_path:
        return "abandon", f"the active image is still {current}"
    return "apply", f"the agent's active image is {current}, and CloudStack records it"


def _write(
    store: Store, lease: Lease, intent: Intent, row: VolumeRow | None, action: str, detail: str
) -> tuple[str, str]:
    try:
        if action == "abandon":
            store.intents.abandoned(lease, intent.id, detail)
            log.info("intent %s of volume %s abandoned: %s", intent.id, intent.volume_id, detail)
            return "abandoned", detail
        assert row is not None and row.expected_path is not None
        if intent.state is IntentState.RECORDED:
            store.intents.changed(lease, intent.id, row.expected_path)
        store.intents.applied(lease, intent.id)
        log.info("intent %s of volume %s applied: %s", intent.id, intent.volume_id, detail)
        return "applied", detail
    except StaleClaim as exc:
        return "flagged", f"closed meanwhile: {exc}"
