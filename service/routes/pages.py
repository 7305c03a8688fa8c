"""The pages: static, offline (no build step, no CDN): the try-it page at ``/``, the reviewer page at ``/review``.

``index.html`` loads ``/static/app.js`` and ``/static/style.css``, ``review.html`` loads
``/static/review.js`` and the same style sheet; both pages load ``/static/words.js`` (the user-facing
words of ``flexguard.models.vocabulary``, written by ``words_script``: no second copy in JavaScript)
and ``/static/common.js`` first, the helpers their scripts share (no build step, so no bundler to share
them otherwise). All of them are package data read
with importlib.resources, so the page works from an installed wheel as well as from the checkout.
The Content-Security-Policy keeps the page to this origin: scripts, styles and requests go only
to this service, and photos are shown from local ``blob:`` URLs, never uploaded anywhere else.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from flexguard.models.vocabulary import words_script

router = APIRouter(include_in_schema=False)
STATIC = files("flexguard.service").joinpath("static")
WORDS_SCRIPT = "words.js"
JAVASCRIPT = "text/javascript; charset=utf-8"
SVG = "image/svg+xml"
FAVICON = "favicon.svg"

# The only files served, with their content types; nothing else under static/ is reachable.
ASSETS: dict[str, str] = {
    "common.js": JAVASCRIPT,
    "app.js": JAVASCRIPT,
    "review.js": JAVASCRIPT,
    "summary.js": JAVASCRIPT,
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": SVG,
}

CSP = (
    # data: images are the strips of a video's flagged frames in /v1/score's answer; blob: media previews a
    # video the user picked, never sent anywhere else.
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str, media_type: str) -> Response:
    return Response(STATIC.joinpath(name).read_bytes(), media_type=media_type, headers=HEADERS)


@router.get("/")
async def index() -> Response:
    return _file("index.html", "text/html; charset=utf-8")


@router.get("/review")
async def review() -> Response:
    return _file("review.html", "text/html; charset=utf-8")


@router.get("/favicon.ico")
async def favicon() -> Response:
    """Browsers ask for /favicon.ico whatever the page links: the same icon, so they get no 404."""
    return _file(FAVICON, SVG)


@router.get(f"/static/{WORDS_SCRIPT}")
async def words() -> Response:
    return Response(words_script(), media_type=JAVASCRIPT, headers=HEADERS)


@router.get("/static/{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, "Not Found")
    return _file(name, media_type)
