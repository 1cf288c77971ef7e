"""The branches of a version 2 session document: each message names, by the document's
own ids, the message it follows (`parent`), the first version it is an edit of
(`version_of`) and whether it is on the current branch (`on_branch`). Checked here so an
import recreates exactly the branches an export had, or names the first field that cannot
be: a parent or version must be an earlier user message (so no cycle can form), and the
current branch must be one path from the first message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.usecases.errors import N_, InvalidInput
from app.usecases.errors import Message as Problem
from app.usecases.import_formats.common import join


@dataclass(frozen=True)
class Place:
    """One message's branch fields as written in the file."""

    role: str
    id: int | str
    parent: int | str | None
    version_of: int | str | None
    on_branch: bool


def resolve(places: list[Place]) -> list[dict[str, Any]]:
    """{parent, version_of, on_branch} per message, ids turned into list indexes."""
    index: dict[int | str, int] = {}
    for i, place in enumerate(places):
        if place.id in index:
            raise InvalidInput(_at(i, "id"), Problem(N_("must be unique: messages[%(other)s] has"
                                                        " the same id."),
                                                     {"other": index[place.id]}))
        index[place.id] = i
    resolved: list[dict[str, Any]] = []
    tip: int | None = None  # the last user message of the current branch so far
    for i, place in enumerate(places):
        parent = _earlier_user(places, index, i, "parent", place.parent)
        first = _earlier_user(places, index, i, "version_of", place.version_of)
        if first is not None:
            if place.role != "user":
                raise InvalidInput(_at(i, "version_of"),
                                   N_("must be null: only a user message has versions."))
            if places[first].version_of is not None:
                raise InvalidInput(_at(i, "version_of"), Problem(
                    N_("must name the first version: messages[%(first)s] is itself a version"
                       " of another."), {"first": first}))
            if parent != resolved[first]["parent"]:
                raise InvalidInput(_at(i, "parent"), Problem(
                    N_("must be the parent of messages[%(first)s], the message this one is a"
                       " version of."), {"first": first}))
        if place.role == "user":
            if place.on_branch and parent != tip:
                raise InvalidInput(_at(i, "on_branch"), N_(
                    "must be false: the current branch is one path, and this message does"
                    " not continue it."))
            if place.on_branch:
                tip = i
        else:
            answered = True if parent is None else resolved[parent]["on_branch"]
            if place.on_branch != answered:
                raise InvalidInput(_at(i, "on_branch"), Problem(
                    N_("must be %(value)s, as for the message it answers."),
                    {"value": str(answered).lower()}))
        resolved.append({"parent": parent, "version_of": first, "on_branch": place.on_branch})
    return resolved


def _earlier_user(places: list[Place], index: dict[int | str, int], i: int, name: str,
                  target: int | str | None) -> int | None:
    if target is None:
        return None
    found = index.get(target)
    if found is None:
        raise InvalidInput(_at(i, name), Problem(
            N_("names no message of this document (%(target)s)."), {"target": repr(target)}))
    if found >= i:
        raise InvalidInput(_at(i, name), N_("must name a message before this one (so the"
                                            " messages cannot form a cycle)."))
    if places[found].role != "user":
        raise InvalidInput(_at(i, name), Problem(
            N_("must name a user message; messages[%(found)s] is an %(role)s message."),
            {"found": found, "role": places[found].role}))
    return found


def _at(i: int, name: str) -> str:
    return join(join("messages", i), name)
