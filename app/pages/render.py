"""Templates and the small helpers every page handler shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.templating import Jinja2Templates

from app import i18n
from app.auth import services_of
from app.rendering import live_body, markdown_html
from app.security import csrf_token
from app.usecases.chats import max_tokens_limit

TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parents[2] / "templates")
TEMPLATES.env.filters["markdown"] = markdown_html
i18n.install(TEMPLATES.env)  # {% trans %} and _() in the language of the request
TEMPLATES.env.globals["live_body"] = live_body


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    user = context.get("user")
    if user and "csrf" not in context:
        context["csrf"] = csrf_token(services_of(request).secret, user["token"])
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status)


def fragment(name: str, **context: Any) -> str:
    return TEMPLATES.get_template(name).render(**context)


def toast(message: str, status: int = 400, kind: str = "error") -> Response:
    """An htmx response that pops a toast instead of replacing the target."""
    return HTMLResponse(
        fragment("_toast.html", message=message, kind=kind), status,
        headers={"HX-Retarget": "#toasts", "HX-Reswap": "beforeend"},
    )


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def limits(request: Request) -> dict[str, int]:
    services = services_of(request)
    s = services.settings
    return {
        "message": s.max_message_chars, "title": s.max_title_chars,
        "system_prompt": s.max_system_prompt_chars, "max_tokens": max_tokens_limit(services),
    }
