"""A chat export as an HTTP download, shared by the JSON API and the pages."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from starlette.responses import Response

from app.services import Services
from app.usecases import exports
from app.usecases.errors import N_, InvalidInput

KINDS = {"json": ("application/json", ".json"), "markdown": ("text/markdown", ".md")}
UNSAFE_IN_NAME = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]+')


def attachment(title: str, extension: str) -> str:
    """A Content-Disposition naming the file after the chat: an ASCII fallback for old
    clients and the exact Unicode name in RFC 5987 `filename*` (Korean titles)."""
    name = " ".join(UNSAFE_IN_NAME.sub(" ", title).split())[:100] or "chat"
    fallback = " ".join(name.encode("ascii", "ignore").decode().split()) or "chat"
    return (f'attachment; filename="{fallback}{extension}";'
            f" filename*=UTF-8''{quote(name + extension, safe='')}")


async def download(services: Services, user_id: str, session_id: str, kind: str) -> Response:
    """The session as a JSON document (`kind` "json") or Markdown ("markdown")."""
    if kind not in KINDS:
        raise InvalidInput("format", N_("must be json or markdown."))
    media_type, extension = KINDS[kind]
    document = await exports.export_session(services, user_id, session_id)
    headers = {"Content-Disposition": attachment(document["session"]["title"], extension)}
    if kind == "markdown":
        text = await exports.export_markdown(services, user_id, session_id)
        return Response(text, media_type=f"{media_type}; charset=utf-8", headers=headers)
    # Korean stays as written (ensure_ascii=False); JSON is UTF-8 by definition.
    body = json.dumps(document, ensure_ascii=False, indent=2)
    return Response(body, media_type=media_type, headers=headers)


def parse_json(raw: bytes) -> object:
    """Any JSON value (foreign exports are lists); the format check names what is wrong."""
    if not raw.strip():
        raise InvalidInput("body", "a JSON document is required.", code="invalid_json")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise InvalidInput("body", f"not valid UTF-8 JSON ({error}).",
                           code="invalid_json") from None
