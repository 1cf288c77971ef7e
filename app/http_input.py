"""Reading request bodies and checking fields. Every failure is a 400 that names the field."""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from app.errors import ApiError, invalid

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"The request body is larger than {limit} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"The request body is larger than {limit} bytes.")
    return bytes(body)


async def read_json(request: Request, limit: int, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}` only where `allow_empty`."""
    raw = await read_body(request, limit)
    if not raw.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_json", "body: a JSON object is required.")
    try:
        # NaN and ±Infinity (not JSON, but Python's parser reads them) become floats that
        # every field check refuses, so the 400 names the field they were sent in.
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ApiError(400, "invalid_json", f"body: not valid UTF-8 JSON ({error}).") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "body: must be a JSON object.")
    return data


async def read_form(request: Request, limit: int) -> dict[str, str]:
    """An urlencoded form (what HTML forms and htmx send) as a dict of its last values."""
    raw = await read_body(request, limit)
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid_form", "body: not a valid UTF-8 form.") from None


def text(
    body: dict[str, Any], field: str, *, max_len: int, required: bool = False,
    allow_blank: bool = True, strip: bool = False,
) -> str | None:
    if field not in body or body[field] is None:
        if required:
            raise invalid(field, "is required.")
        return None
    value = body[field]
    if not isinstance(value, str):
        raise invalid(field, "must be a string.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(field, "must be valid Unicode text.") from None
    if "\x00" in value:
        raise invalid(field, "must not contain NUL characters.")
    if strip:
        value = value.strip()
    if not allow_blank and not value.strip():
        raise invalid(field, "must not be empty.")
    if len(value) > max_len:
        raise invalid(field, f"must be at most {max_len} characters.")
    return value


def number(body: dict[str, Any], field: str, *, low: float, high: float) -> float | None:
    if field not in body or body[field] is None:
        return None
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(field, "must be a number.")
    # math.isfinite would overflow on a huge integer literal; ints are finite anyway.
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(field, "must be a number.")
    if not low <= value <= high:
        raise invalid(field, f"must be between {low:g} and {high:g}.")
    return float(value)


def integer(body: dict[str, Any], field: str, *, low: int, high: int) -> int | None:
    if field not in body or body[field] is None:
        return None
    value = body[field]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, "must be a whole number.")
    if not low <= value <= high:
        raise invalid(field, f"must be between {low} and {high}.")
    return value


def username(body: dict[str, Any]) -> str:
    value = text(body, "username", max_len=32, required=True) or ""
    if not USERNAME.match(value):
        raise invalid("username", "must be 3–32 characters of letters, digits, '_', '.' or '-'.")
    return value


def email(body: dict[str, Any], required: bool = True) -> str | None:
    value = text(body, "email", max_len=254, required=required, strip=True)
    if value is not None and not EMAIL.match(value):
        raise invalid("email", "must be an email address like name@example.com.")
    return value


def password(body: dict[str, Any]) -> str:
    value = text(body, "password", max_len=1024, required=True) or ""
    if len(value) < 8:
        raise invalid("password", "must be at least 8 characters.")
    return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(name, "must be a whole number.") from None
    if not low <= value <= high:
        raise invalid(name, f"must be between {low} and {high}.")
    return value
