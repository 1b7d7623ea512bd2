"""Uploads scanned by a real clamd (devkit/clamd.py): an infected file is a 422 naming the
signature with nothing stored, and a daemon that cannot be reached refuses or accepts the upload
as DEPTHMILL_CLAMD_UNAVAILABLE says."""

from __future__ import annotations

import logging

import pytest

from db import media
from devkit import media_files
from devkit.clamd import EICAR, SIGNATURE

PHOTO = media_files.jpeg_bytes(media_files.photo("coffee").resize((80, 60)))
# A photo that is valid in every other way, the test file in its comment.
INFECTED = media_files.with_comment(PHOTO, EICAR)


def nothing_stored(api) -> None:
    assert list(api.ctx.storage.list()) == []
    assert api.ctx.db.run(media.list_media).items == []


@pytest.fixture(params=["unix", "tcp"])
def scanned_api(request, make_api, clamd):
    where = ({"clamd_socket": clamd.socket_path} if request.param == "unix"
             else {"clamd_host": "127.0.0.1", "clamd_port": clamd.port})
    return make_api(**where)


def test_an_infected_upload_is_a_422_naming_the_signature_and_nothing_is_stored(scanned_api):
    r = scanned_api.post("/api/media/upload", files=[("files", ("holiday.jpg", INFECTED))])
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "infected" and SIGNATURE in error["message"]
    nothing_stored(scanned_api)


def test_a_clean_upload_is_scanned_and_accepted(scanned_api):
    r = scanned_api.post("/api/media/upload", files=[("files", ("clean.jpg", PHOTO))])
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["status"] == "created"


def test_an_infected_file_among_clean_ones_is_rejected_alone(make_api, clamd):
    api = make_api(clamd_socket=clamd.socket_path)
    r = api.post("/api/media/upload", files=[("files", ("clean.jpg", PHOTO)),
                                             ("files", ("bad.jpg", INFECTED))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["results"][1]["error"]["code"] == "infected"
    (stored,) = api.ctx.db.run(media.list_media).items
    assert stored.original_name == "clean.jpg"


def test_an_unreachable_scanner_refuses_uploads_with_a_503(make_api, tmp_path):
    api = make_api(clamd_socket=tmp_path / "absent.sock")
    r = api.post("/api/media/upload", files=[("files", ("clean.jpg", PHOTO))])
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "scanner_unavailable"
    assert "scanner is unreachable" in r.json()["error"]["message"]
    assert "absent.sock" not in r.text  # the daemon's address is logged, not answered
    nothing_stored(api)


def test_an_unreachable_scanner_accepts_uploads_when_told_to_and_logs_it(make_api, tmp_path,
                                                                         caplog):
    api = make_api(clamd_socket=tmp_path / "absent.sock", clamd_unavailable="accept")
    with caplog.at_level(logging.WARNING, logger="cluster.media.malware"):
        r = api.post("/api/media/upload", files=[("files", ("unscanned.jpg", PHOTO))])
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["status"] == "created"
    assert "unscanned.jpg accepted without a malware scan" in caplog.text
