"""Routes of the web app: the page (one shell for the library and the viewer's deep links), its
static files, and how to reach it from another device on the network."""

from __future__ import annotations

import ipaddress
import uuid
from pathlib import Path

import segno
from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from cluster.config.network import lan_addresses
from serve_app.api.auth import READ
from serve_app.api.deps import Context

STATIC = Path(__file__).with_name("static")
_PAGE_HEADERS = {"Cache-Control": "no-cache"}  # the shell is tiny; its modules revalidate

pages = APIRouter(include_in_schema=False)
connect = APIRouter(prefix="/api/app", tags=["web app"], dependencies=[READ])


def _page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)


@pages.get("/")
def library_page() -> FileResponse:
    return _page()


@pages.get("/view/{media_id}")
def viewer_page(media_id: uuid.UUID) -> FileResponse:
    # The page loads the item itself, so a deep link pasted into a new tab works; an id that is
    # not a UUID gets the API's JSON 422 like any other route.
    return _page()


class ConnectOut(BaseModel):
    """Where another device (a headset, a phone) can open the app, with a QR code for it."""

    urls: list[str]
    qr_svg: str | None  # of the first URL
    secure: bool  # WebXR and the phone's tilt need https (or localhost)
    note: str | None


@connect.get("/connect", response_model=ConnectOut, summary="Addresses and a QR code for other devices")
def connect_info(ctx: Context) -> ConnectOut:
    settings = ctx.settings
    scheme = "https" if settings.tls_certfile else "http"
    if settings.public_url:  # a proxy in front may end TLS: its scheme is what a device gets
        urls = [settings.public_url.rstrip("/") + "/"]
    elif _loopback(settings.host):
        urls = []
    else:
        urls = [f"{scheme}://{a}:{settings.port}/" for a in lan_addresses()]
    secure = urls[0].startswith("https://") if urls else scheme == "https"
    note = None
    if not urls:
        note = (f"the gateway listens on {settings.host} only: start it with DEPTHMILL_HOST=0.0.0.0 "
                "to open it from another device on this network")
    elif not secure:
        note = "WebXR and motion sensors need https: start with `depthmill up --tls` for a headset"
    qr = segno.make(urls[0], error="m").svg_inline(scale=4, border=2) if urls else None
    return ConnectOut(urls=urls, qr_svg=qr, secure=secure, note=note)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def install_web_app(app: FastAPI) -> None:
    app.include_router(connect)
    app.include_router(pages)
    app.mount("/app", StaticFiles(directory=STATIC), name="web app")
