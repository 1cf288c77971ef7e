"""Reading chats from a file: LocalChat's own session document, an Open WebUI chat export
or a ChatGPT `conversations.json`. `parse` recognises the format by its shape, checks the
whole file and returns every chat in it, or raises InvalidInput naming the first problem
by its path in the file; nothing is written here."""

from __future__ import annotations

from typing import Any

from app.usecases.errors import N_, InvalidInput
from app.usecases.import_formats import chatgpt, openwebui, ours
from app.usecases.import_formats.common import ImportedChat, Limits, check_count, join

__all__ = ["ImportedChat", "Limits", "parse"]

UNKNOWN = N_("must be a LocalChat session export, an Open WebUI chat export or a ChatGPT"
             " conversations.json.")


def parse(document: Any, limits: Limits) -> tuple[str, list[ImportedChat]]:
    """(format, chats): format is "localchat", "openwebui" or "chatgpt"."""
    if ours.is_ours(document):
        return "localchat", [ours.parse(document, limits)]
    if isinstance(document, dict):  # one chat of a foreign export, on its own
        document = [document]
        single = True
    else:
        single = False
    if not isinstance(document, list) or not document:
        raise InvalidInput("document", UNKNOWN)
    check_count(len(document), limits)
    if chatgpt.is_chatgpt(document[0]):
        source, parse_one = "chatgpt", chatgpt.parse_one
    elif openwebui.is_openwebui(document[0]):
        source, parse_one = "openwebui", openwebui.parse_one
    else:
        raise InvalidInput("document", UNKNOWN)
    chats = []
    for index, item in enumerate(document):
        path = "" if single else join("", index)
        if not isinstance(item, dict):
            raise InvalidInput(path or "document", "must be an object.")
        chats.append(parse_one(item, path, limits))
    return source, chats
