"""What can go wrong when talking to CloudStack, as typed exceptions.

Every error says whether trying the same request again can help (`transient`). CloudStack's own
refusals keep its `errorcode` (the HTTP-like code, e.g. 401, 431, 530), `cserrorcode` (the
exception class code, e.g. 4350, 9999) and `errortext` exactly as the server sent them.
"""

from __future__ import annotations

# CloudStack's ApiErrorCode values the client reasons about.
UNAUTHORIZED = 401
API_LIMIT_EXCEEDED = 429
PARAM_ERROR = 431
INTERNAL_ERROR = 530

# Refused before anything ran: safe to send again whatever the command does. 429 is
# CloudStack's API throttling, checked before dispatch; 503 is a management server that
# accepts no jobs (maintenance, shutdown) or a proxy in front of it with no server behind.
REFUSED_BEFORE_RUNNING = frozenset({API_LIMIT_EXCEEDED, 503})
# Failed on the server side, perhaps after part of the work: worth another try only for a
# request that may safely run twice (a read, or a write of absolute values).
SERVER_SIDE_FAILURES = frozenset({INTERNAL_ERROR, 500, 502, 504})


class CloudStackError(Exception):
    """Base of every error the client raises. `command` is the API command concerned."""

    transient = False

    def __init__(self, message: str, *, command: str = "") -> None:
        super().__init__(message)
        self.command = command


class CloudStackApiError(CloudStackError):
    """CloudStack (or a proxy in front of it) answered with an error."""

    def __init__(
        self,
        *,
        command: str,
        errorcode: int,
        errortext: str,
        cserrorcode: int | None = None,
        http_status: int | None = None,
        idempotent: bool = False,
        retry_after: float | None = None,
    ) -> None:
        suffix = f", cserrorcode {cserrorcode}" if cserrorcode is not None else ""
        super().__init__(f"{command}: {errortext} (errorcode {errorcode}{suffix})", command=command)
        self.errorcode = errorcode
        self.cserrorcode = cserrorcode
        self.errortext = errortext
        self.http_status = http_status if http_status is not None else errorcode
        self.retry_after = retry_after
        self.transient = errorcode in REFUSED_BEFORE_RUNNING or (
            idempotent and errorcode in SERVER_SIDE_FAILURES
        )


class CloudStackAuthError(CloudStackApiError):
    """401: the key pair, the signature or its `expires` was refused. Never retried."""


class CloudStackTransportError(CloudStackError):
    """No answer: the connection failed, was dropped or timed out.

    `sent` is False when the request provably never reached the server (connection refused,
    name not resolved, connect timeout): then a retry is always safe. When it is True the
    server may have acted on it, and only an idempotent request is retried.
    """

    def __init__(
        self, message: str, *, command: str = "", sent: bool, idempotent: bool = False
    ) -> None:
        super().__init__(message, command=command)
        self.sent = sent
        self.transient = not sent or idempotent


class CloudStackInvalidRequest(CloudStackError):
    """A request CloudStack would refuse whatever its state (see `params`); never sent."""


class CloudStackProtocolError(CloudStackError):
    """The answer is not what CloudStack sends (not JSON, no `...response` object)."""


class CloudStackTimeout(CloudStackError):
    """The call's deadline passed before CloudStack gave a usable answer."""

    transient = True

    def __init__(
        self, message: str, *, command: str = "", last_error: CloudStackError | None = None
    ) -> None:
        super().__init__(message, command=command)
        self.last_error = last_error


class CloudStackJobTimeout(CloudStackTimeout):
    """An async job was still running at the deadline; it may still finish: ask again with
    `wait_job(jobid)`."""

    def __init__(self, message: str, *, command: str = "", jobid: str) -> None:
        super().__init__(message, command=command)
        self.jobid = jobid


class CloudStackJobFailed(CloudStackError):
    """An async job ended with `jobstatus` 2 (failed) or 3 (cancelled)."""

    def __init__(
        self,
        *,
        command: str,
        jobid: str,
        jobstatus: int,
        jobresultcode: int | None,
        errorcode: int | None,
        errortext: str,
    ) -> None:
        what = "cancelled" if jobstatus == 3 else "failed"
        super().__init__(
            f"{command}: job {jobid} {what}: {errortext} (errorcode {errorcode})", command=command
        )
        self.jobid = jobid
        self.jobstatus = jobstatus
        self.jobresultcode = jobresultcode
        self.errorcode = errorcode
        self.errortext = errortext
