"""Receiving an upload's files from a streamed multipart body."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from starlette.requests import Request

from cluster import ingest
from serve_app.api.errors import ApiError
from serve_app.api.multipart import received_files

BOUNDARY = "xYzZY"


def body(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def request(payload: bytes, chunk: int = 65536, content_type: str | None = None,
            sent: list[int] | None = None) -> Request:
    """A request whose body arrives in ``chunk``-sized messages; ``sent`` counts those read."""
    content_type = content_type or f"multipart/form-data; boundary={BOUNDARY}"
    pieces = [payload[i:i + chunk] for i in range(0, len(payload), chunk)] or [b""]
    sent = [] if sent is None else sent

    async def receive():
        i = len(sent)
        sent.append(i)
        return {"type": "http.request", "body": pieces[i], "more_body": i + 1 < len(pieces)}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(b"content-type", content_type.encode())]}
    return Request(scope, receive)


def receive_all(req: Request, **kw):
    """(filename, bytes, sha256, too_large) of each file, read inside the block, and the paths
    the files had on disk."""
    async def go():
        limits = {"field_name": "files", "max_files": 5, "max_bytes": 20 * 2**20} | kw
        async with received_files(req, **limits) as files:
            out, paths = [], []
            for f in files:
                if f.too_large:
                    out.append((f.name, None, None, True))
                    continue
                path, sha = await asyncio.to_thread(f.finish)
                out.append((f.name, path.read_bytes(), sha, False))
                paths.append(path)
            return out, paths
    return asyncio.run(go())


def test_files_arrive_whole_with_their_hash_and_names():
    big = os.urandom(ingest.SPILL_BYTES * 2 + 12345)  # spilled to disk twice on the way
    small = b"tiny photo"
    payload = body(("files", "café.jpg", small), ("note", None, b"a text field"),
                   ("files", "video.mp4", big))
    files, paths = receive_all(request(payload, chunk=50_000))
    assert [(n, d, s) for n, d, s, _ in files] == [
        ("café.jpg", small, hashlib.sha256(small).hexdigest()),
        ("video.mp4", big, hashlib.sha256(big).hexdigest()),
    ]
    assert paths and not any(p.exists() for p in paths)  # temp files go with the block


def test_a_file_over_the_limit_is_marked_and_not_kept():
    payload = body(("files", "big.jpg", b"z" * 5000), ("files", "ok.jpg", b"fine"))
    files, _ = receive_all(request(payload, chunk=1000), max_bytes=4096)
    assert files[0] == ("big.jpg", None, None, True)
    assert files[1][:2] == ("ok.jpg", b"fine")


def test_too_many_files_stops_reading_the_body():
    sent: list[int] = []
    payload = body(*[("files", f"{i}.jpg", b"x" * 10_000) for i in range(10)])
    with pytest.raises(ApiError) as refused:
        receive_all(request(payload, chunk=1000, sent=sent), max_files=2)
    assert (refused.value.status, refused.value.code) == (413, "too_many_files")
    assert len(sent) < len(payload) // 1000 // 2  # refused at the third file, not at the end


@pytest.mark.parametrize(("payload", "content_type", "status"), [
    (b'{"files": []}', "application/json", 415),
    (b"", "multipart/form-data", 422),  # no boundary
    (body(("other", "a.jpg", b"x")), None, 422),  # no `files` field
    (f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx".encode() + b"\x00" * 10, None, 422),
    (f"--{BOUNDARY}\r\nBroken header without colon\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(), None, 422),
])
def test_bad_bodies_are_refused_with_a_clear_error(payload, content_type, status):
    with pytest.raises(ApiError) as refused:
        receive_all(request(payload, content_type=content_type))
    assert refused.value.status == status and refused.value.message


def test_temp_files_are_removed_when_the_body_fails_midway(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(ingest, "SPILL_BYTES", 1000)
    truncated = body(("files", "a.jpg", b"y" * 50_000))[:30_000]  # ends before the last boundary
    with pytest.raises(ApiError):
        receive_all(request(truncated, chunk=1000))
    assert list(tmp_path.iterdir()) == []


def test_a_long_file_goes_to_disk_as_it_arrives(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(ingest, "SPILL_BYTES", 4096)

    async def on_disk_before_finish() -> int:
        req = request(body(("files", "long.mp4", b"v" * 50_000)), chunk=1000)
        async with received_files(req, field_name="files", max_files=1, max_bytes=10**6):
            return sum(p.stat().st_size for p in tmp_path.iterdir())

    # All but the last, not yet full, spill of 4096 bytes is on disk; only that waits in memory.
    assert asyncio.run(on_disk_before_finish()) > 50_000 - 4096
