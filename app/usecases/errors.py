"""Errors a use case raises. Adapters map them to HTTP (api/ to JSON, pages/ to HTML).

Each carries what a caller needs as values, never a message to be parsed apart again: an
invalid input names its field, a rate limit says when to retry.
"""

from __future__ import annotations


class UseCaseError(Exception):
    """A request was refused; nothing was recorded (a failed sign-in may be, for audit)."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(UseCaseError):
    """One field's value is unacceptable."""

    code = "invalid_input"

    def __init__(self, field: str, problem: str, code: str = "invalid_input") -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
        self.code = code


class NotAuthenticated(UseCaseError):
    code = "not_authenticated"


class InvalidCredentials(NotAuthenticated):
    """Wrong username or password (never say which)."""

    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("The username or password is wrong.")


class Forbidden(UseCaseError):
    code = "forbidden"

    def __init__(self, message: str, code: str = "forbidden") -> None:
        super().__init__(message)
        self.code = code


class NotFound(UseCaseError):
    """Missing, or someone else's: never say which."""

    code = "not_found"

    def __init__(self, what: str = "resource") -> None:
        super().__init__(f"The {what} does not exist.")
        self.what = what


class Conflict(UseCaseError):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


class RateLimited(UseCaseError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(UseCaseError):
    """The server cannot do it now (model not loaded, queue full, read models behind)."""

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class TooLarge(UseCaseError):
    code = "body_too_large"
