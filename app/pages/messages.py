"""Use-case messages in the page's language.

Use cases raise typed errors whose texts are `Message`s: an English template (a msgid in
locales/) and its values. The JSON API answers them in English (API.md); the pages show
them to people (toasts, a problem beside its field), so here the template is translated
and then filled with the same values. A template missing from the catalog is shown in
English, never dropped.
"""

from __future__ import annotations

from app.i18n import N_
from app.i18n import gettext as _
from app.usecases.errors import Conflict, InvalidInput, Message, NotFound, UseCaseError

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

# Starlette's own errors (no route, wrong method), by status.
HTTP: dict[int, str] = {404: N_("Not Found"), 405: N_("Method Not Allowed")}


def render(text: Message) -> str:
    return text.render(_)


def problem(error: InvalidInput | Conflict) -> str:
    """What is wrong with a field, to show beside it."""
    return render(error.problem_text)


def message(error: UseCaseError) -> str:
    """The whole message, for a toast or the top of a form."""
    if isinstance(error, InvalidInput | Conflict) and error.field is not None:
        field = error.field
        return _("%(field)s: %(problem)s") % {
            "field": _(FIELDS[field]) if field in FIELDS else field, "problem": problem(error)}
    if isinstance(error, NotFound) and error.what in MISSING:
        return _(MISSING[error.what])
    return render(error.text)


def http(status: int, detail: str) -> str:
    """An HTTPException's text: 404 and 405 by status (they carry Starlette's English
    phrase), any other detail as it is."""
    return _(HTTP[status]) if status in HTTP else detail
