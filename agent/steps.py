"""Typed journal steps. Each job kind names its steps in an enum (the values are the names
the journal has always held, so journals of earlier releases read the same) and gives each
step's details a frozen dataclass. A step is an intent written before its side effect
(`merge`: a commit is about to start) or a completion written after it (`merged`); each
enum says which. A renamed step or field is then a type error, not a lab failure."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar, Protocol, TypeVar

from agent.jobs import Job, Journal


class StepName(enum.StrEnum):
    """The steps of one job kind; subclassed per kind."""


class Detail(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]


D = TypeVar("D", bound=Detail)


def write(journal: Journal, job_id: str, step: StepName, detail: Detail | None = None) -> None:
    journal.record(job_id, step.value, **(dataclasses.asdict(detail) if detail else {}))


def reached(job: Job, step: StepName) -> bool:
    return job.step(step.value) is not None


def read(job: Job, step: StepName, kind: type[D]) -> D | None:
    """The details of the job's last step of that name, if it reached it. Fields written by a
    newer release are ignored; a field an older one did not write takes its default."""
    found = job.step(step.value)
    if found is None:
        return None
    known = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in found.detail.items() if k in known})


def read_all(job: Job, step: StepName, kind: type[D]) -> list[D]:
    known = {f.name for f in dataclasses.fields(kind)}
    return [
        kind(**{k: v for k, v in s.detail.items() if k in known})
        for s in job.steps
        if s.name == step.value
    ]


def when(job: Job, step: StepName) -> float | None:
    """When the job's last step of that name was written (the journal's clock)."""
    found = job.step(step.value)
    return None if found is None else found.at


def reached_after(job: Job, later: StepName, earlier: StepName) -> bool:
    """Whether `later` was written after the last `earlier` (both reached)."""
    names = [s.name for s in job.steps]
    if later.value not in names or earlier.value not in names:
        return False
    return _last(names, later.value) > _last(names, earlier.value)


def _last(names: list[str], name: str) -> int:
    return len(names) - 1 - names[::-1].index(name)
