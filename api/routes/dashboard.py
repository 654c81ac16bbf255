"""The dashboard: a static page at ``/`` with its ES modules and CSS under ``/static`` (``api/static/``).

No build step and no CDN: the page is plain HTML, CSS and a few ES modules; the one library it uses,
TradingView's ``lightweight-charts``, is pinned in ``package.json`` and copied by ``make install`` into
``api/static/vendor/`` (git-ignored). Everything the page shows comes from the API it is served by:
REST ``/v1`` (status, candles, pools, tokens, CEX books) and the websocket ``/ws`` (docs/dashboard.md).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"
CHART_LIBRARY = STATIC / "vendor" / "lightweight-charts.js"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def dashboard() -> FileResponse:
    """The page itself; revalidated on each load so an upgraded node serves its new page at once."""
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def mount(app: FastAPI) -> None:
    """Serve ``/`` and ``/static/*`` on ``app`` (a sub-application, so it cannot be a router's route)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
