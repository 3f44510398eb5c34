"""The demo page and its assets: served by the API itself, under a policy that lets only
this origin's scripts, styles and connections run (tests/web drives it in Chromium)."""

from __future__ import annotations

from html.parser import HTMLParser

from api.routes.page import CONTENT_SECURITY_POLICY, STATIC_DIR


def test_the_page_is_served_at_the_root_with_its_policy(client):
    client.headers.pop("Authorization")  # a browser's first visit carries no key
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY


class _Assets(HTMLParser):
    """What a browser fetches to render the page: src= of any element, href= of <link>."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        url = found.get("src") or (found.get("href") if tag == "link" else None)
        if url and not url.startswith("data:"):  # inline data is not fetched
            self.urls.append(url)


def test_every_asset_the_page_names_is_served_from_this_origin(client):
    html = client.get("/").text
    parser = _Assets()
    parser.feed(html)
    assets = parser.urls
    assert any(url.endswith(".js") for url in assets) and any(url.endswith(".css")
                                                              for url in assets)
    for asset in assets:
        assert asset.startswith("/static/"), f"{asset}: nothing is fetched from elsewhere"
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert served.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "<script>" not in html and " style=" not in html  # the policy would block them


def test_a_missing_asset_is_a_404_and_paths_cannot_leave_the_folder(client):
    assert client.get("/static/nope.js").status_code == 404
    escaped = client.get("/static/..%2F..%2Fsettings.py")
    assert escaped.status_code == 404
    assert (STATIC_DIR / "index.html").is_file()


def test_the_page_is_not_in_the_openapi(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/static") for path in paths)
    assert "/v1/examples" in paths and "/v1/examples/{name}/import" in paths
