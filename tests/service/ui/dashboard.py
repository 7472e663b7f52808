"""A person at the dashboard without a browser: an httpx client that signs in and posts
forms the way the pages do (the browser itself is tests/service/ui/test_ui_browser.py)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import httpx

from tests.service.support import API_TOKEN

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


class Dashboard:
    def __init__(self, url: str, **client: Any) -> None:
        self.http = httpx.Client(base_url=url, timeout=15, **client)
        self.csrf = ""

    def close(self) -> None:
        self.http.close()

    def sign_in(
        self, token: str = API_TOKEN, name: str | None = "alice", **headers: str
    ) -> httpx.Response:
        form = self.http.get("/ui/login", headers=headers)
        assert form.status_code == 200, form.text
        fields = {"csrf": csrf_of(form.text), "token": token} | ({"name": name} if name else {})
        answer = self.http.post("/ui/login", data=fields, headers=headers)
        if answer.status_code == 303:
            page = self.http.get("/ui")
            assert page.status_code == 200, page.text
            self.csrf = csrf_of(page.text)
        return answer

    @property
    def session_cookie(self) -> str | None:
        return self.http.cookies.get("rollhook_session")

    def post(self, path: str, csrf: str | None = "", **fields: str) -> httpx.Response:
        """A form post; ``csrf``: the session's own by default, None for none at all."""
        data = dict(fields)
        if csrf is not None:
            data["csrf"] = csrf or self.csrf
        return self.http.post(path, data=data)

    def act(self, target: str, action: str, **fields: str) -> httpx.Response:
        return self.post(f"/ui/targets/{target}/{action}", **fields)


class Markup(HTMLParser):
    """What a page's markup holds that a Content-Security-Policy without 'unsafe-inline'
    would refuse (or that would need eval): inline scripts, handlers, styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.inline: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script":
            self._in_script = True
            if not named.get("src"):
                self.inline.append("<script> without src")
            else:
                self.scripts.append(str(named["src"]))
        if tag == "style":
            self.inline.append("<style>")
        for name, value in attrs:
            if name.startswith("on"):
                self.inline.append(f"handler {name}")
            if name == "style":
                self.inline.append("style attribute")
            if name.startswith(("hx-on", "data-hx-on")) or name in ("hx-vars", "data-hx-vars"):
                self.inline.append(f"htmx inline code {name}")
            if value and value.strip().lower().startswith("javascript:"):
                self.inline.append(f"javascript: URL in {name}")
            if value and value.strip().lower().startswith("js:"):
                self.inline.append(f"js: value in {name}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("script content")


def inline_code(html: str) -> list[str]:
    markup = Markup()
    markup.feed(html)
    markup.close()
    return markup.inline
