"""A stored policy as the policy logic takes it."""

from __future__ import annotations

from controller import policies, store


def logic_policy(stored: store.Policy) -> policies.Policy:
    """Raises PolicyError when the stored policy cannot be planned (e.g. no selector)."""
    kinds = store.SelectorKind
    by_kind = {kind: [s for s in stored.selectors if s.kind is kind] for kind in kinds}
    selector = policies.Selector(
        vms=tuple(s.value for s in by_kind[kinds.VM]),
        volumes=tuple(s.value for s in by_kind[kinds.VOLUME]),
        tags=tuple(policies.TagMatch(s.key, s.value) for s in by_kind[kinds.TAG]),
        accounts=tuple(s.value for s in by_kind[kinds.ACCOUNT]),
    )
    return policies.Policy(
        id=stored.id,
        name=stored.name,
        schedule=logic_schedule(stored.schedule),
        max_snaps=stored.max_snaps,
        selector=selector,
        quiesce=policies.Quiesce(stored.quiesce.value),
        enabled=stored.enabled,
    )


def logic_schedule(schedule: store.Schedule) -> policies.Schedule:
    """Raises PolicyError (ScheduleError) when the schedule cannot be evaluated."""
    if isinstance(schedule, store.IntervalSchedule):
        return policies.Schedule.cloudstack(
            schedule.interval_type.value, schedule.schedule, schedule.timezone
        )
    return policies.Schedule.cron(schedule.expression, schedule.timezone)
