"""Security headers, a CSP the pages actually satisfy, and CSRF on the sign-in forms
(issue 7, item 5)."""

from __future__ import annotations

import re

import httpx

from app.security_headers import security_headers
from tests.server import ROOT, Api, ServerProcess


def test_every_response_has_the_security_headers(server: ServerProcess, admin: Api) -> None:
    for path in ("/login", "/healthz", "/api/sessions/", "/static/js/app.js", "/nowhere"):
        headers = httpx.get(server.url + path).headers
        csp = headers["content-security-policy"]
        script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp and "*" not in csp
        assert script_src.split() == ["script-src", "'self'"]
        assert "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        assert "strict-transport-security" not in headers  # COOKIE_SECURE is off here
    assert "max-age=" in security_headers(hsts=True)["Strict-Transport-Security"]


def test_templates_need_nothing_inline() -> None:
    """The CSP forbids inline scripts, handlers and style attributes: none may be written."""
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template
        assert not re.search(r"\son[a-z]+\s*=", text), template
        assert not re.search(r"\sstyle\s*=|<style", text), template
        assert "hx-on" not in text and "js:" not in text, template
    base = (ROOT / "templates" / "base.html").read_text()
    assert '"allowEval":false' in base and '"includeIndicatorStyles":false' in base


def test_a_non_ascii_csrf_header_is_refused_not_a_crash(server: ServerProcess,
                                                        user: Api) -> None:
    cookie = {"session": user.token or ""}
    response = httpx.post(server.url + "/api/sessions/", json={"title": "제목"},
                          cookies=cookie, headers={b"X-CSRF-Token": "토큰값".encode()})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"


def test_sign_in_and_sign_up_forms_need_their_csrf_token(server: ServerProcess,
                                                         admin: Api) -> None:
    name = "formcsrf1"
    values = {"username": name, "email": "formcsrf@example.com", "password": "비밀번호를 길게 씀"}
    forged = httpx.post(server.url + "/register", data=values)
    assert forged.status_code == 403
    with httpx.Client(base_url=server.url) as browser:
        form = browser.get("/register")
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form.text)
        assert token, form.text
        done = browser.post("/register", data={**values, "csrf_token": token.group(1)})
        assert done.status_code == 303, done.text
    login = {"username": name, "password": "비밀번호를 길게 씀"}
    assert httpx.post(server.url + "/login", data=login).status_code == 403
    with httpx.Client(base_url=server.url) as browser:
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', browser.get("/login").text)
        assert token
        wrong = browser.post("/login", data={**login, "csrf_token": "0" * 64})
        assert wrong.status_code == 403
        done = browser.post("/login", data={**login, "csrf_token": token.group(1)})
        assert done.status_code == 303 and "session" in done.cookies
