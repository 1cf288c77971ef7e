"""Errors a use case raises. Adapters map them to HTTP (api/ to JSON, pages/ to HTML).

Each carries what a caller needs as values, never a message to be parsed apart again: an
invalid input names its field, a rate limit says when to retry, and every text is a
`Message`: an English template (a gettext msgid, marked with `N_` so Babel extracts it)
and the values it names. The JSON API answers the English rendering (API.md fixes those
texts); the pages translate the template and then fill in the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


def N_(template: str) -> str:
    """Marks a template for the catalog (Babel's default keyword); translated where shown.
    Defined here rather than taken from app.i18n so use cases stay free of the web layer."""
    return template


def _same(template: str) -> str:
    return template


@dataclass(frozen=True)
class Message:
    """A text to show a person: `template % params`, e.g. ("must be at least %(n)s
    characters.", {"n": 8}). A param may itself be a Message, rendered in the same language."""

    template: str
    params: Mapping[str, Param] = field(default_factory=dict)

    def render(self, translate: Callable[[str], str] = _same) -> str:
        """In English by default; with `translate` (gettext), in the page's language."""
        text = translate(self.template) if self.template else ""  # gettext("") is the header
        if not self.params:
            return text
        return text % {key: value.render(translate) if isinstance(value, Message) else value
                       for key, value in self.params.items()}


Param = str | int | Message
Text = str | Message  # a plain str is a template without params


def message_of(text: Text) -> Message:
    return text if isinstance(text, Message) else Message(text)


def field_message(field_name: str, problem: Message) -> Message:
    """The API's "field: problem", as in "username: that username is already taken."."""
    return Message(N_("%(field)s: %(problem)s"), {"field": field_name, "problem": problem})


class UseCaseError(Exception):
    """A request was refused; nothing was recorded (a failed sign-in may be, for audit)."""

    code = "error"

    def __init__(self, message: Text) -> None:
        self.text = message_of(message)
        self.message = self.text.render()  # English, as the JSON API answers it
        super().__init__(self.message)


class InvalidInput(UseCaseError):
    """One field's value is unacceptable."""

    code = "invalid_input"

    def __init__(self, field: str, problem: Text, code: str = "invalid_input") -> None:
        self.problem_text = message_of(problem)
        super().__init__(field_message(field, self.problem_text))
        self.field = field
        self.problem = self.problem_text.render()
        self.code = code


class NotAuthenticated(UseCaseError):
    code = "not_authenticated"


class InvalidCredentials(NotAuthenticated):
    """Wrong username or password (never say which)."""

    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__(N_("The username or password is wrong."))


class Forbidden(UseCaseError):
    code = "forbidden"

    def __init__(self, message: Text, code: str = "forbidden") -> None:
        super().__init__(message)
        self.code = code


class NotFound(UseCaseError):
    """Missing, or someone else's: never say which."""

    code = "not_found"

    def __init__(self, what: str = "resource") -> None:
        # Pages say it by `what` (app/pages/messages.py); this English text is the API's.
        super().__init__(Message("The %(what)s does not exist.", {"what": what}))
        self.what = what


class Conflict(UseCaseError):
    """With a `field`, `message` is that field's problem, said as "field: problem"."""

    def __init__(self, code: str, message: Text, field: str | None = None) -> None:
        self.problem_text = message_of(message)
        super().__init__(self.problem_text if field is None
                         else field_message(field, self.problem_text))
        self.code = code
        self.field = field
        self.problem = self.problem_text.render()


class RateLimited(UseCaseError):
    code = "rate_limited"

    def __init__(self, message: Text, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(UseCaseError):
    """The server cannot do it now (model not loaded, queue full, read models behind)."""

    def __init__(self, code: str, message: Text, retry_after: int) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class TooLarge(UseCaseError):
    code = "body_too_large"

    @classmethod
    def body(cls, limit: int) -> TooLarge:
        """A request body over `limit` bytes."""
        return cls(Message(N_("The request body is larger than %(n)s bytes."), {"n": limit}))
