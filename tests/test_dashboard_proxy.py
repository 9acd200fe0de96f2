"""The dashboard behind the reverse proxy of docs/dashboard-tls.md, served by the real uvicorn.

Requests carry what the documented nginx sends (Host, X-Forwarded-For, X-Forwarded-Proto https)
and their request targets byte for byte (``http.client``, which neither normalises nor merges a
path as httpx does), so what the dashboard answers is what a browser behind the proxy gets.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from dashboard.app import DashboardServer
from tests._fixtures_broker import wait_until
from tests._fixtures_dashboard import USER_PASSWORD, csrf_of, http_login, make_settings, seed_org

SITE_URL = "https://dashboard.example.fr"
NGINX = {"host": "dashboard.example.fr", "x-forwarded-for": "203.0.113.7",
         "x-forwarded-proto": "https"}
"""The headers docs/dashboard-tls.md's nginx sets on every request it passes on."""
METRICS_TOKEN = "m" * 32
CTI_TOKEN = "c" * 32


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[DashboardServer, dict[str, str]]]:
    """The seeded org served as docs/dashboard-tls.md (a) sets it up (the proxy on the loopback
    trusted), with a scrape token and a CTI token; and a logged-in supervisor's headers (session
    cookie and CSRF token)."""
    (tmp_path / "metrics-token").write_text(METRICS_TOKEN)
    (tmp_path / "cti-token").write_text(CTI_TOKEN)
    settings = make_settings(tmp_path, trusted_proxies=["127.0.0.1/32"],
                             metrics_token_file=tmp_path / "metrics-token",
                             cti_token_file=tmp_path / "cti-token")
    data = seed_org(settings)
    with DashboardServer(settings, start_ingest=False) as server:
        with httpx.Client(base_url=server.url, timeout=10.0) as c:
            session = http_login(c, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
            cookie = {"cookie": f"__Host-miroir={session}"}
            csrf = csrf_of(c.get("/agents/agent-a1", headers=cookie).text)
        yield server, {**cookie, "x-csrf-token": csrf}


def _send(server: DashboardServer, method: str, target: str, headers: dict[str, str],
          body: dict[str, Any] | None = None) -> tuple[int, str | None, bytes]:
    """Send ``target`` exactly as written, through the proxy's headers plus ``headers``; return
    the status, the Location and the body."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10.0)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        sent = {**NGINX, **headers}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            sent |= {"content-type": "application/json", "content-length": str(len(data))}
        for name, value in sent.items():
            conn.putheader(name, value)
        conn.endheaders(data)
        answer = conn.getresponse()
        return answer.status, answer.getheader("location"), answer.read()
    finally:
        conn.close()


def test_a_trailing_slash_behind_the_proxy_keeps_the_browser_on_https(proxied: Any) -> None:
    """`/campaigns/` behind the documented nginx answered 307 to
    `http://dashboard.example.fr/campaigns`: Starlette wrote an absolute address from what
    uvicorn saw (plain http; it does not believe X-Forwarded-Proto), so the redirect left TLS (a
    form posted there came back a GET from nginx's port-80 301), and from the Host header as
    sent (`Host: evil.example` got `http://evil.example/campaigns`). The Location is now the
    path and query only, which the browser resolves on the https address it asked; 307 still
    (a form is posted again, with its body, to the address without the slash)."""
    server, cookie = proxied
    for typed, method, where in (
            ("/campaigns/", "GET", "/campaigns"),
            ("/campaigns/?status=open&q=%C3%A9t%C3%A9", "GET", "/campaigns?status=open&q=%C3%A9t%C3%A9"),
            ("/campaigns/?q=a+b%26c&x=&y", "GET", "/campaigns?q=a+b%26c&x=&y"),
            ("/agents/agent-a1/", "GET", "/agents/agent-a1"),
            ("/teams/team-a/", "GET", "/teams/team-a"),
            ("/agents/north%2Fpriya/", "GET", "/agents/north%2Fpriya"),
            ("/agents/agent-a1/flags/", "POST", "/agents/agent-a1/flags")):
        for host in ("dashboard.example.fr", "evil.example"):
            status, location, _ = _send(server, method, typed, {**cookie, "host": host})
            assert (status, location) == (307, where), (typed, host)
            assert urljoin(SITE_URL + typed, location) == SITE_URL + where


def test_the_public_endpoints_with_a_trailing_slash_redirect_without_a_login(
        proxied: Any) -> None:
    """`/metrics/` and `/healthz/` answered 303 to /login (a Prometheus job or a health check
    configured with the slash got the login page), and a CTI server's POST to
    `/api/cti/call-state/` 401 as if its token were wrong. They are redirected (307) to their
    address, as the pages are; nothing is served with the slash, so a proxy's
    `location = /metrics` allow-list still covers every scrape, and the token is checked there."""
    server, _ = proxied
    scrape = {"authorization": f"Bearer {METRICS_TOKEN}"}
    for method, typed, headers, body in (
            ("GET", "/metrics/", {}, None), ("GET", "/metrics/", scrape, None),
            ("GET", "/metrics//", scrape, None), ("GET", "/healthz/", {}, None),
            ("POST", "/api/cti/call-state/", {"authorization": f"Bearer {CTI_TOKEN}"},
             {"state": "active", "box": "box-a1"})):
        status, location, answer = _send(server, method, typed, headers, body)
        assert (status, location, answer) == (307, typed.rstrip("/"), b""), typed
    with httpx.Client(base_url=server.url, headers=NGINX, timeout=10.0) as c:
        scraped = c.get("/metrics/", headers=scrape, follow_redirects=True)
        assert scraped.status_code == 200 and "miroir_boxes_online" in scraped.text
        assert scraped.url.path == "/metrics"
        assert c.get("/metrics/", follow_redirects=True).status_code == 401
        assert c.get("/healthz/", follow_redirects=True).json()["ok"] is True
        cti = {"state": "active", "box": "box-a1"}
        straight = c.post("/api/cti/call-state", json=cti,
                          headers={"authorization": f"Bearer {CTI_TOKEN}"})
        redirected = c.post("/api/cti/call-state/", json=cti, follow_redirects=True,
                            headers={"authorization": f"Bearer {CTI_TOKEN}"})
        assert redirected.url.path == "/api/cti/call-state"
        assert (redirected.status_code, redirected.json()) == (straight.status_code,
                                                               straight.json())
        assert c.post("/api/cti/call-state/", json=cti,
                      follow_redirects=True).status_code == 401


HOSTILE_TARGETS = (
    "//evil.example/", "//evil.example/campaigns/", "///evil.example/campaigns/",
    "/\\evil.example/", "/\\/evil.example/", "/%2F%2Fevil.example/", "/%2f/evil.example/",
    "/%5Cevil.example/", "/%09/evil.example/", "/%0D%0A/evil.example/", "/.//evil.example/",
    "/agents//evil.example/", "/agents///evil.example/", "/agents/%2F%2Fevil.example/",
    "/agents/%5C%5Cevil.example/", "/teams/%2F%5Cevil.example/", "/campaigns%2F",
    "/campaigns%2F%2F", "/campaigns//", "/metrics//", "//metrics/", "/static",
    "/api/cti/call-state//", "/campaigns/?next=//evil.example/",
)


def test_no_address_is_redirected_off_the_site(proxied: Any) -> None:
    """An open redirect is worse than the bug: whatever path a link makes a browser ask for
    (leading `//`, backslashes, encoded slashes, control characters) and whatever Host it is
    asked under, every Location the dashboard answers stays on the address the browser used."""
    server, cookie = proxied
    answers = []
    for target in HOSTILE_TARGETS:
        for headers in ({}, cookie, {**cookie, "host": "evil.example"}):
            status, location, _ = _send(server, "GET", target, headers)
            if location is not None:
                answers.append((target, headers.get("host"), status, location))
    assert sum(status == 307 for *_, status, _ in answers) >= 20  # redirects there to judge
    off_site = [a for a in answers if urlsplit(urljoin(SITE_URL + "/x", a[3])).netloc
                != "dashboard.example.fr"]
    assert off_site == []
    # A browser reads `/\\host` as `//host` and drops tabs and line ends: none of those either.
    assert [a for a in answers if not a[3].startswith("/") or a[3][1:2] in ("/", "\\")
            or any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in a[3])] == []
    # No route of the dashboard starts with two slashes; were one added, its address stays local.
    from dashboard.app import local_location

    assert local_location("//evil.example", b"a=1") == "/%2Fevil.example?a=1"
    assert local_location("/\\evil.example", b"") == "/%5Cevil.example"


def test_head_is_answered_as_get_without_its_body(proxied: Any) -> None:
    """Uptime monitors and `curl -I` send HEAD: `/healthz`, `/login`, `/metrics` and every page a
    GET reaches answered 405 (FastAPI's routes take only the methods they name), so the site read
    as down. A HEAD now gets the headers its GET would get, without the body; a route that takes
    no GET still answers 405."""
    server, session = proxied
    cookie = {"cookie": session["cookie"]}
    scrape = {"authorization": f"Bearer {METRICS_TOKEN}"}
    with httpx.Client(base_url=server.url, headers=NGINX, timeout=10.0) as c:
        for path, headers in (("/healthz", {}), ("/login", {}), ("/metrics", scrape),
                              ("/agents/agent-a1", cookie), ("/api/floor", cookie)):
            got, head = c.get(path, headers=headers), c.head(path, headers=headers)
            assert (head.status_code, got.status_code) == (200, 200), path
            assert head.content == b"" and got.content != b"", path
            assert head.headers["content-type"] == got.headers["content-type"], path
        healthz = c.head("/healthz")
        assert int(healthz.headers["content-length"]) == len(c.get("/healthz").content)
        assert c.head("/metrics").status_code == 401  # the token is still checked
        assert c.head("/", headers={}).status_code == 303  # and the login
        logout = c.head("/logout", headers=cookie)
        assert (logout.status_code, logout.headers["allow"]) == (405, "POST")


def test_a_head_on_the_live_stream_answers_its_headers_and_ends(proxied: Any) -> None:
    """A HEAD on `/api/stream` sent the headers and then held the request open, as the stream
    it ran as a GET: a request sent after it on the same connection got no answer (none in 20 s),
    and the stream kept one of the user's 8 places (and of the 256) until the client hung up.
    The HEAD now ends with its headers; the next request is answered, the place given back."""
    server, session = proxied
    hub = server.app.state.hub
    with socket.create_connection(("127.0.0.1", server.port), timeout=10.0) as sock:
        sock.sendall(f"HEAD /api/stream HTTP/1.1\r\nHost: {NGINX['host']}\r\n"
                     f"Cookie: {session['cookie']}\r\n\r\n"
                     f"GET /healthz HTTP/1.1\r\nHost: {NGINX['host']}\r\n\r\n".encode())
        answers = b""
        while answers.count(b"HTTP/1.1 ") < 2 or not answers.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)  # the socket's timeout fails the test if nothing comes
            assert chunk, answers
            answers += chunk
    head, healthz = answers.split(b"HTTP/1.1 ")[1:]
    assert head.startswith(b"200 ") and b"content-type: text/event-stream" in head
    assert head.endswith(b"\r\n\r\n")  # headers only, no event
    assert healthz.startswith(b"200 ") and healthz.endswith(b'{"ok":true,"ingest":null}')
    wait_until(lambda: hub.open_streams() == 0, "the HEAD's stream to give its place back")
