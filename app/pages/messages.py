"""Use-case messages in the page's language.

Use cases raise typed errors with English texts (the JSON API answers them as they are,
API.md). The pages show them to people (toasts, a problem beside its field), so this
adapter translates the ones it knows: exact texts, and texts with a number or a list in
them matched by pattern. A text it does not know is shown as it is, never dropped.
"""

from __future__ import annotations

import re

from app.i18n import N_
from app.i18n import gettext as _
from app.usecases.errors import Conflict, InvalidInput, UseCaseError
from app.usecases.import_formats import UNKNOWN

# Exact texts: a field's problem or a whole message.
EXACT: dict[str, str] = {m: m for m in (
    N_("is required."),
    N_("must be a string."),
    N_("must be valid Unicode text."),
    N_("must not contain NUL characters."),
    N_("must not be empty."),
    N_("must be a number."),
    N_("must be a whole number."),
    N_("must be an object."),
    N_("must be an email address like name@example.com."),
    N_("must be 3–32 characters of letters, digits, '_', '.' or '-'."),
    N_("must be json or markdown."),
    N_("that username is already taken."),
    N_("choose a file to import."),
    N_("must be a LocalChat session export, an Open WebUI chat export or a ChatGPT"
       " conversations.json."),
    N_("The username or password is wrong."),
    N_("Sign-up is closed here; ask an administrator for an account."),
    N_("This account is disabled; ask an administrator."),
    N_("There must always be an active administrator; make someone else admin first."),
    N_("The reply queue is full; try again shortly."),
    N_("The CSRF token is missing or wrong; reload the page."),
    N_("The form expired or did not come from this site; try again."),
    N_("Only administrators can do this."),
    N_("Sign in first."),
    N_("Sign in first: send a valid bearer token."),
    N_("The server stopped while generating."),
    N_("Not Found"),
    N_("Method Not Allowed"),
)}
assert UNKNOWN in EXACT  # the import's "unknown format" text is the one above

# Texts with values in them: the pattern's named groups fill the translation.
PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"must be at least (?P<n>\d+) characters\."),
     N_("must be at least %(n)s characters.")),
    (re.compile(r"must be at most (?P<n>\d+) characters\."),
     N_("must be at most %(n)s characters.")),
    (re.compile(r"must be between (?P<low>\S+) and (?P<high>\S+)\."),
     N_("must be between %(low)s and %(high)s.")),
    (re.compile(r"unknown model; available: (?P<models>.*)\."),
     N_("unknown model; available: %(models)s.")),
    (re.compile(r"Too many sign-ups from this address\. Try again in (?P<n>\d+) seconds\."),
     N_("Too many sign-ups from this address. Try again in %(n)s seconds.")),
    (re.compile(r"Too many failed sign-ins\. Try again in (?P<n>\d+) seconds\."),
     N_("Too many failed sign-ins. Try again in %(n)s seconds.")),
    (re.compile(r"The request body is larger than (?P<n>\d+) bytes\."),
     N_("The request body is larger than %(n)s bytes.")),
)

# Field names as the pages call them (a message naming a field outside a form).
FIELDS: dict[str, str] = {
    "username": N_("Username"), "password": N_("Password"), "email": N_("Email"),
    "display_name": N_("Display name"), "title": N_("Title"), "q": N_("Search"),
    "file": N_("File"), "model": N_("Model"), "system_prompt": N_("System prompt"),
    "temperature": N_("Temperature"), "content": N_("Message"),
}

# NotFound's `what`.
MISSING: dict[str, str] = {
    "session": N_("This chat does not exist, or it is not yours."),
    "message": N_("This message does not exist."),
    "user": N_("This user does not exist."),
    "model": N_("This model does not exist."),
}


_FIELD_PROBLEM = re.compile(r"(?P<field>[\w.\[\]]+): (?P<problem>.+)", re.S)
_MISSING = re.compile(r"The (?P<what>\w+) does not exist\.")


def text(english: str) -> str:
    """A use case's English text in the page's language (as it is when unknown): also
    InvalidInput's "field: problem" and NotFound's "The session does not exist."."""
    if english in EXACT:
        return _(english)
    for pattern, msgid in PATTERNS:
        found = pattern.fullmatch(english)
        if found:
            return _(msgid) % found.groupdict()
    missing = _MISSING.fullmatch(english)
    what = missing.group(1) if missing else ""
    if what in MISSING:
        return _(MISSING[what])
    parts = _FIELD_PROBLEM.fullmatch(english)
    if parts and (parts["problem"] in EXACT or any(p.fullmatch(parts["problem"])
                                                   for p, _m in PATTERNS)):
        field = parts["field"]
        return _("%(field)s: %(problem)s") % {
            "field": _(FIELDS[field]) if field in FIELDS else field,
            "problem": text(parts["problem"])}
    return english


def problem(error: InvalidInput | Conflict) -> str:
    """What is wrong with a field, to show beside it."""
    if isinstance(error, InvalidInput):
        return text(error.problem)
    return text(error.message.partition(": ")[2] or error.message)


def message(error: UseCaseError) -> str:
    """The whole message, for a toast or the top of a form."""
    return text(error.message)
