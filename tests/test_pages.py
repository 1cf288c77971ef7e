"""Page endpoints over plain HTTP: cookie sessions and CSRF, redirects, escaping."""

from __future__ import annotations

import re

import httpx

from tests.server import Api, ServerProcess


def browser_client(server: ServerProcess, api: Api) -> tuple[httpx.Client, str]:
    """A cookie-session client and the CSRF token its chat page carries."""
    assert api.token
    client = httpx.Client(base_url=server.url, cookies={"session": api.token})
    page = client.get("/chats", follow_redirects=True)
    found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page.text)
    assert found, page.text[:500]
    return client, found.group(1)


def test_state_changes_from_a_browser_need_the_csrf_token(server: ServerProcess, admin: Api,
                                                          user: Api) -> None:
    client, csrf = browser_client(server, user)
    head = admin.head()
    for path in ("/chats", "/api/sessions/"):
        refused = client.post(path, headers={"HX-Request": "true"})
        assert refused.status_code == 403, path
        forged = client.post(path, headers={"X-CSRF-Token": "0" * 64})
        assert forged.status_code == 403, path
    assert client.post("/api/sessions/", json={}).json()["error"]["code"] == "csrf_failed"
    assert admin.head() == head, "a refused request appended an event"

    created = client.post("/chats", headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
    assert created.status_code == 204 and created.headers["HX-Redirect"].startswith("/chats/")
    # Reading needs no token; bearer clients never need one.
    assert client.get("/api/sessions/").status_code == 200
    assert user.post("/api/sessions/", json={}).status_code == 201


def test_signed_out_pages_redirect_to_sign_in(server: ServerProcess) -> None:
    anonymous = httpx.Client(base_url=server.url)
    response = anonymous.get("/chats/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 303
    assert response.headers["location"] == (
        "/login?next=%2Fchats%2F00000000-0000-0000-0000-000000000000")
    assert anonymous.get("/").headers["location"] == "/chats"
    # After sign-in only local paths are followed.
    login = anonymous.get("/login?next=https://evil.example/")
    assert 'name="next" value="/chats"' in login.text


def test_titles_and_messages_are_escaped_in_pages(server: ServerProcess, user: Api) -> None:
    session = user.new_session(title="<b>bold</b> & <script>x()</script>")
    client, _csrf = browser_client(server, user)
    html = client.get(f"/chats/{session['id']}").text
    assert "<script>x()</script>" not in html and "<b>bold</b>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;x()&lt;/script&gt;" in html


def test_vendor_assets_are_the_pinned_htmx_2(server: ServerProcess) -> None:
    htmx = httpx.get(f"{server.url}/vendor/htmx.min.js")
    assert htmx.status_code == 200 and 'version:"2.' in htmx.text.replace(" ", "")
    assert httpx.get(f"{server.url}/vendor/sse.js").status_code == 200
    assert httpx.get(f"{server.url}/vendor/other.js").status_code == 404
    assert httpx.get(f"{server.url}/static/css/app.css").status_code == 200
