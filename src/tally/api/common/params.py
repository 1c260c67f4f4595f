"""Query parameters: integers in a range, bounded text, true/false, lists
(``a=1&a=2`` or ``a[]=1``) and string maps (``keys[id]=acme`` or JSON text
``keys={"id":"acme"}``). Each refusal is ``Invalid`` with one sentence."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from tally.api.common.bodies import check_json
from tally.errors import Invalid

_STRING_MAP = msgspec.json.Decoder(dict[str, str])
V = TypeVar("V")


def echo(params: dict[str, Any], name: str, value: V) -> V:
    """``value``, also set in ``params`` (the answer's echo of what the
    request asked) unless it is absent (``None`` or no values)."""
    if value is not None and value != []:
        params[name] = value
    return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f"{name} must be an integer, not {raw[:32]!r}") from None
    if not low <= value <= high:
        raise Invalid(f"{name} must be between {low} and {high}, not {value}")
    return value


def query_str(request: Request, name: str, max_length: int) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length:
        raise Invalid(f"{name} must be at most {max_length} characters, not {len(raw)}")
    return raw


def query_bool(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise Invalid(f"{name} must be true or false, not {raw[:32]!r}")


def query_list(request: Request, name: str, most: int | None = None) -> list[str]:
    """A repeated parameter (``a=1&a=2``), also accepted as ``a[]=1``; at
    most ``most`` values."""
    values = request.query_params.getlist(name) + request.query_params.getlist(f"{name}[]")
    values = [v for v in values if v != ""]
    if most is not None and len(values) > most:
        raise Invalid(f"{name} takes at most {most} values")
    return values


def query_map(request: Request, name: str) -> dict[str, str]:
    """A string→string map parameter, sent either as ``name[key]=value``
    (the Python SDK) or as URL-encoded JSON text ``name={"key":"value"}``.
    The caller checks its keys and values."""
    out: dict[str, str] = {}
    prefix = name + "["
    for param, value in request.query_params.multi_items():
        if param.startswith(prefix) and param.endswith("]"):
            out[param[len(prefix) : -1]] = value
        elif param == name and value:
            out.update(json_query_map(name, value))
    return out


def json_query_map(name: str, value: str) -> dict[str, str]:
    """A map query parameter sent as JSON text (``keys={"id":"acme"}``)."""
    data = value.encode()
    check_json(data, name)
    try:
        return _STRING_MAP.decode(data)
    except msgspec.ValidationError:
        raise Invalid(f'{name} must be a JSON object of strings, such as {{"id":"acme"}}') from None
    except (msgspec.DecodeError, RecursionError):
        raise Invalid(
            f'{name} must be sent as {name}[id]=acme or as JSON text {name}={{"id":"acme"}}'
        ) from None
