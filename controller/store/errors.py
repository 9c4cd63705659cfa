"""What the store raises. Callers branch on these, never on SQLAlchemy's or a driver's errors."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises."""


class StoreUnavailable(StoreError):
    """The database could not be reached or stayed locked; the same call may succeed later."""


class SchemaMismatch(StoreError):
    """The database's schema revision is not the one this code was written for."""


class NotFound(StoreError):
    """No record with that id."""


class Conflict(StoreError):
    """The change contradicts what the store holds (a name or idempotency key already used for
    something else, a policy that runs still refer to)."""


class LeaseLost(StoreError):
    """The write was refused because this controller no longer holds the leader lease with the
    epoch it presented: another controller leads now (or nobody, after it expired). The caller
    must stop acting as leader: dispatch nothing more and drop what it was about to do."""


class StaleClaim(Conflict):
    """The job is not in the state this transition starts from, or another epoch holds it."""
