"""Receive an upload's files from a multipart body as it streams in, hashing them on the way.

Starlette's form parser spools each file into a SpooledTemporaryFile and, past 1 MB, writes every
chunk of a few tens of KB from a worker thread. At 20 uploads/s of 2 MB photos those thread hops
were an eighth of the gateway's time holding the GIL, and ingest then copied each file once more
to hash it. Here each file goes into a ``HashedSpool``, whose writes (one per few MB, from a worker
thread) hash it as well: a photo crosses to a thread only once, in ingest, and a long video never
sits in memory. The parser is the one Starlette uses (python-multipart).
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from cluster.ingest import HashedSpool
from serve_app.api.errors import ApiError

MAX_PART_HEADER_BYTES = 16 * 2**10


class _Parts:
    """python-multipart callbacks: collect the parts named ``field_name`` as files, skip the rest."""

    def __init__(self, field_name: str, max_files: int, max_bytes: int, charset: str) -> None:
        self.field_name, self.max_files, self.max_bytes = field_name, max_files, max_bytes
        self.charset = charset
        self.files: list[HashedSpool] = []
        self.due: list[HashedSpool] = []  # files with enough pending to be written out
        self._current: HashedSpool | None = None
        self._header_name = b""
        self._header_value = b""
        self._header_bytes = 0
        self._disposition = b""
        self.ended = False  # the closing boundary was read

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value_data, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._current, self._disposition, self._header_bytes = None, b"", 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += self._bounded(data[start:end])

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += self._bounded(data[start:end])

    def _bounded(self, piece: bytes) -> bytes:
        self._header_bytes += len(piece)
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise ApiError(422, "invalid_request",
                           f"a part's headers are over {MAX_PART_HEADER_BYTES} bytes")
        return piece

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if self._decode(options.get(b"name", b"")) != self.field_name:
            return  # another form field: its data is skipped
        if len(self.files) == self.max_files:
            raise ApiError(413, "too_many_files",
                           f"more than {self.max_files} files sent; at most {self.max_files} per request")
        filename = options.get(b"filename")
        self._current = HashedSpool(self.max_bytes,
                                    self._decode(filename) if filename is not None else None)
        self.files.append(self._current)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None and self._current.add(data[start:end]):
            self.due.append(self._current)

    def _part_end(self) -> None:
        self._current = None

    def _end(self) -> None:
        self.ended = True

    def _decode(self, value: bytes) -> str:
        try:
            return value.decode(self.charset)
        except UnicodeDecodeError:
            return value.decode("latin-1")


def _charset(value: bytes | None) -> str:
    try:
        return codecs.lookup((value or b"utf-8").decode("latin-1")).name
    except LookupError:
        return "latin-1"


async def _receive(request: Request, field_name: str, max_files: int, max_bytes: int) -> list[HashedSpool]:
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       f"send the files as multipart/form-data, in `{field_name}` fields")
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(422, "invalid_request", "the multipart Content-Type has no boundary")
    parts = _Parts(field_name, max_files, max_bytes, _charset(params.get(b"charset")))
    parser = MultipartParser(boundary, parts.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            for received in parts.due:
                await run_in_threadpool(received.spill)
            parts.due.clear()
        parser.finalize()
        if not parts.ended:  # python-multipart's finalize does not check this itself
            raise ApiError(422, "invalid_request", "the multipart body ended before its closing boundary")
        if not parts.files:
            raise ApiError(422, "invalid_request", f"no files sent: add one or more `{field_name}` fields")
    except BaseException as e:
        for received in parts.files:
            received.close()
        if isinstance(e, FormParserError):
            raise ApiError(422, "invalid_request", f"the multipart body is malformed: {e}") from e
        if isinstance(e, ClientDisconnect):
            # Nobody reads this answer: the client left, or the body limit has answered already.
            raise ApiError(400, "client_disconnected", "the body ended before it was complete") from e
        raise
    return parts.files


@asynccontextmanager
async def received_files(
    request: Request, *, field_name: str, max_files: int, max_bytes: int,
) -> AsyncIterator[list[HashedSpool]]:
    """Every file sent under ``field_name``, hashed, for the block's duration. A file over
    ``max_bytes`` is read to its end but not kept, and marked ``too_large``. A body that is not
    multipart, is malformed, or holds no such file or more than ``max_files`` is refused with an
    ``ApiError``; other form fields are skipped."""
    files = await _receive(request, field_name, max_files, max_bytes)
    try:
        yield files
    finally:
        for received in files:
            received.close()
