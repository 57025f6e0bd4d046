"""`GET /console` and its static files, with the headers that keep them safe.

Nothing here reads the database or computes anything: the page asks the JSON
API for everything it shows, with the key its user signs in with."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.responses import Response

router = APIRouter(include_in_schema=False)

#: What the page may load and do: its own scripts, styles and API, nothing
#: inline, no eval, never framed, no forms posted anywhere (the page's forms
#: are handled by its script).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@cache
def _asset(name: str) -> bytes | None:
    """A file of static/, by its plain name (no folders), or None."""
    if "/" in name or name.startswith(".") or _media_type(name) is None:
        return None
    found = resources.files("api.console").joinpath("static", name)
    return found.read_bytes() if found.is_file() else None


def _media_type(name: str) -> str | None:
    dot = name.rfind(".")
    return _MEDIA_TYPES.get(name[dot:]) if dot > 0 else None


def _answer(name: str, cache_control: str) -> Response:
    body = _asset(name)
    media_type = _media_type(name)
    if body is None or media_type is None:
        raise HTTPException(404, f"the console has no file {name!r}")
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control}
    return Response(body, media_type=media_type, headers=headers)


@router.get("/console")
def console_page() -> Response:
    return _answer("index.html", "no-store")


@router.get("/console/static/{name}")
def console_file(name: str) -> Response:
    # Revalidated on each load: a new release's files are seen at once.
    return _answer(name, "no-cache")
