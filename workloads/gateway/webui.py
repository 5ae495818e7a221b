"""The web UI's built files (`workloads/web/dist`), served on the API's own origin: `/` and
`/index.html` revalidated on every load, `/assets/*` (content-hashed names) cached for a year.

The files are read once at start and kept gzipped beside the plain bytes (a few hundred KB):
a browser that accepts gzip gets the small copy, and nothing touches the disk per request.
A file is routed by its exact path, so `/v1/...` and `/ws` are never shadowed.
"""

from __future__ import annotations

import gzip
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "web" / "dist"
"""Where `npm run build` puts it in a checkout (the image sets EDGE_WEB_DIR instead)."""
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes
    content_type: str
    cache_control: str

    def respond(self, request: web.Request) -> web.Response:
        headers = {"Cache-Control": self.cache_control, "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("Accept-Encoding", "") and self.gzipped:
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=self.gzipped, content_type=self.content_type,
                                headers=headers)  # fmt: skip
        return web.Response(body=self.body, content_type=self.content_type, headers=headers)


def web_dir(setting: str) -> Path | None:
    """EDGE_WEB_DIR: empty for the checkout's build if there is one, `none` for no UI."""
    if setting == "none":
        return None
    found = Path(setting) if setting else DEFAULT_DIR
    return found if (found / "index.html").is_file() else None


def load(root: Path) -> dict[str, StaticFile]:
    """URL path -> file, for every file under `root`."""
    files: dict[str, StaticFile] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        body = path.read_bytes()
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        compressible = kind.startswith("text/") or kind.endswith(("javascript", "json", "svg+xml"))
        cache = IMMUTABLE if relative.startswith("assets/") else REVALIDATE
        files[f"/{relative}"] = StaticFile(
            body, gzip.compress(body, 9) if compressible else b"", kind, cache
        )
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


def add_routes(router: web.UrlDispatcher, root: Path) -> None:
    for url, file in load(root).items():

        async def handler(request: web.Request, file: StaticFile = file) -> web.Response:
            return file.respond(request)

        router.add_get(url, handler)
