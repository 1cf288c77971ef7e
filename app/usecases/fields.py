"""Checks of plain input values. Every failure is an InvalidInput naming its field."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from app.usecases.errors import N_, InvalidInput, Message

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
MIN_PASSWORD = 8

Values = Mapping[str, Any]


def between(low: int | str, high: int | str) -> Message:
    """The problem of a whole number out of its range (also for use cases' own checks)."""
    return Message(N_("must be between %(low)s and %(high)s."), {"low": low, "high": high})


def at_most(limit: int) -> Message:
    """The problem of a text longer than `limit` characters."""
    return Message(N_("must be at most %(n)s characters."), {"n": limit})


def text(
    values: Values, field: str, *, max_len: int, required: bool = False,
    allow_blank: bool = True, strip: bool = False,
) -> str | None:
    if field not in values or values[field] is None:
        if required:
            raise InvalidInput(field, N_("is required."))
        return None
    value = values[field]
    if not isinstance(value, str):
        raise InvalidInput(field, N_("must be a string."))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, N_("must be valid Unicode text.")) from None
    if "\x00" in value:
        raise InvalidInput(field, N_("must not contain NUL characters."))
    if strip:
        value = value.strip()
    if not allow_blank and not value.strip():
        raise InvalidInput(field, N_("must not be empty."))
    if len(value) > max_len:
        raise InvalidInput(field, at_most(max_len))
    return value


def required_text(values: Values, field: str, *, max_len: int, allow_blank: bool = True,
                  strip: bool = False) -> str:
    value = text(values, field, max_len=max_len, required=True, allow_blank=allow_blank,
                 strip=strip)
    assert value is not None
    return value


def number(values: Values, field: str, *, low: float, high: float) -> float | None:
    if field not in values or values[field] is None:
        return None
    value = values[field]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(field, N_("must be a number."))
    # math.isfinite would overflow on a huge integer literal; ints are finite anyway.
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(field, N_("must be a number."))
    if not low <= value <= high:
        raise InvalidInput(field, between(f"{low:g}", f"{high:g}"))
    return float(value)


def boolean(values: Values, field: str, default: bool = False) -> bool:
    value = values.get(field, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(field, N_("must be true or false."))
    return value


def integer(values: Values, field: str, *, low: int, high: int) -> int | None:
    if field not in values or values[field] is None:
        return None
    value = values[field]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, N_("must be a whole number."))
    if not low <= value <= high:
        raise InvalidInput(field, between(low, high))
    return value


def username(values: Values) -> str:
    value = required_text(values, "username", max_len=32)
    if not USERNAME.match(value):
        raise InvalidInput("username",
                           N_("must be 3–32 characters of letters, digits, '_', '.' or '-'."))
    return value


def email(values: Values, required: bool = True) -> str | None:
    value = text(values, "email", max_len=254, required=required, strip=True)
    if value is not None and not EMAIL.match(value):
        raise InvalidInput("email", N_("must be an email address like name@example.com."))
    return value


def password(values: Values) -> str:
    value = required_text(values, "password", max_len=1024)
    if len(value) < MIN_PASSWORD:
        raise InvalidInput("password", Message(N_("must be at least %(n)s characters."),
                                                {"n": MIN_PASSWORD}))
    return value


def whole_number(raw: str | None, field: str, default: int, low: int, high: int) -> int:
    """A whole number given as text (a query parameter, a form field)."""
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise InvalidInput(field, N_("must be a whole number.")) from None
    if not low <= value <= high:
        raise InvalidInput(field, between(low, high))
    return value
