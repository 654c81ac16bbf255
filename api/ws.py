"""The live websocket ``/ws`` (filled in by the websocket work; an empty router until then)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
