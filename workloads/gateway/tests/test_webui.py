"""The web UI's files on the API's origin: the page revalidated, hashed assets cached for a
year, gzip when accepted, and nothing outside the build directory or under `/v1` served."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from workloads.gateway import webui

pytestmark = pytest.mark.unit


async def test_the_page_and_its_assets_are_served_with_their_cache_headers(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>exchange</title>")
    (tmp_path / "assets" / "index-3f2a.js").write_text("console.log('x');" * 100)
    (tmp_path.parent / "secret.txt").write_text("not for the web")
    assert webui.web_dir(str(tmp_path)) == tmp_path
    assert webui.web_dir("none") is None
    assert webui.web_dir(str(tmp_path / "missing")) is None
    app = web.Application()
    webui.add_routes(app.router, tmp_path)
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/", headers={"Accept-Encoding": "identity"})
        assert page.status == 200 and "exchange" in await page.text()
        assert page.headers["Cache-Control"] == "no-cache"
        assert page.headers["Content-Type"].startswith("text/html")
        script = await client.get("/assets/index-3f2a.js", auto_decompress=False,
                                  headers={"Accept-Encoding": "gzip"})  # fmt: skip
        assert script.headers["Content-Encoding"] == "gzip"
        assert script.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert gzip.decompress(await script.read()).startswith(b"console.log")
        for path in ("/../secret.txt", "/assets/../../secret.txt", "/v1/markets", "/nope.js"):
            assert (await client.get(path)).status == 404, path
