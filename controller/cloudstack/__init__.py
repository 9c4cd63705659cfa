"""The controller's CloudStack API client (asyncio, standard library HTTP)."""

from controller.cloudstack.client import CloudStackClient, CloudStackConfig, is_read
from controller.cloudstack.errors import (
    CloudStackApiError,
    CloudStackAuthError,
    CloudStackError,
    CloudStackInvalidRequest,
    CloudStackJobFailed,
    CloudStackJobTimeout,
    CloudStackProtocolError,
    CloudStackTimeout,
    CloudStackTransportError,
)
from controller.cloudstack.responses import JsonObject
from controller.cloudstack.retry import NO_RETRY, RetryPolicy

__all__ = [
    "NO_RETRY",
    "CloudStackApiError",
    "CloudStackAuthError",
    "CloudStackClient",
    "CloudStackConfig",
    "CloudStackError",
    "CloudStackInvalidRequest",
    "CloudStackJobFailed",
    "CloudStackJobTimeout",
    "CloudStackProtocolError",
    "CloudStackTimeout",
    "CloudStackTransportError",
    "JsonObject",
    "RetryPolicy",
    "is_read",
]
