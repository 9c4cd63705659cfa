"""Parameter checks every command shares, with CloudStack's codes and texts."""

from __future__ import annotations

from .jobs import ApiError

UNAUTHORIZED, PARAM_ERROR, INTERNAL_ERROR = 401, 431, 530
CS_SERVER_API_EXCEPTION, CS_INVALID_PARAMETER, CS_CLOUD_RUNTIME = 9999, 4350, 4250

Params = dict[str, str]


def no_such_entity(command: str, name: str, value: str) -> ApiError:
    """What the UUID translation of an id parameter says when the id names nothing."""
    return ApiError(
        PARAM_ERROR,
        f"Unable to execute API command {command.lower()} due to invalid value. "
        f"Invalid parameter {name} value={value} due to incorrect long value format, "
        "or entity does not exist or due to incorrect parameter annotation for the "
        "field in api cmd class.",
        CS_SERVER_API_EXCEPTION,
    )


def required(command: str, params: Params, name: str) -> str:
    if name not in params:
        raise ApiError(
            PARAM_ERROR,
            f"Unable to execute API command {command.lower()} due to missing parameter {name}",
            CS_SERVER_API_EXCEPTION,
        )
    return params[name]


def integer(command: str, params: Params, name: str) -> int | None:
    if name not in params:
        return None
    try:
        return int(params[name])
    except ValueError:
        raise ApiError(
            PARAM_ERROR,
            f"Unable to execute API command {command.lower()} due to invalid value. "
            f"Invalid parameter {name} value={params[name]} due to incorrect integer value format",
            CS_SERVER_API_EXCEPTION,
        ) from None
