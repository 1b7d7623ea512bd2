"""Importing an existing library from a folder and from an S3 prefix."""

from __future__ import annotations

import boto3

from cluster.config.settings import Settings
from db import media, queue
from db.connection import Database
from pipelines.import_library import import_library
from devkit import media_files
from devkit.s3 import moto_s3_server


def library(root):
    variants = media_files.photo_variants()
    (root / "2024" / "trip").mkdir(parents=True)
    (root / "2024" / "a.jpg").write_bytes(variants["rgb.jpg"])
    (root / "2024" / "trip" / "copy-of-a.jpg").write_bytes(variants["rgb.jpg"])  # duplicate
    (root / "2024" / "trip" / "b.heic").write_bytes(variants["photo.heic"])
    (root / "2024" / "trip" / "clip.mp4").write_bytes(media_files.video_bytes())
    (root / "2024" / "notes.txt").write_text("not media")
    (root / "2024" / "broken.jpg").write_bytes(variants["rgb.jpg"][:500])
    (root / ".thumbnails").mkdir()
    (root / ".thumbnails" / "x.jpg").write_bytes(variants["gray.jpg"])  # hidden: skipped


def test_import_a_folder_with_duplicates_and_bad_files(database_url, tmp_path):
    library(tmp_path / "lib")
    settings = Settings(home=tmp_path / "home", database_url=database_url, model="tiny")
    summary = import_library(str(tmp_path / "lib"), settings)
    assert (summary["created"], summary["duplicate"], summary["rejected"]) == (3, 1, 2)
    assert {r["code"] for r in summary["rejected_files"]} == {"unsupported_media_type", "corrupt_file"}
    again = import_library(str(tmp_path / "lib"), settings)
    assert (again["created"], again["duplicate"], again["rejected"]) == (0, 4, 2)
    with Database(database_url, max_size=1) as db:
        assert len(db.run(media.list_media).items) == 3
        assert db.run(queue.stats).status_counts()["waiting"] == 3


def test_import_an_s3_prefix(database_url, tmp_path):
    with moto_s3_server() as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="old-gallery")
        photo = media_files.jpeg_bytes(media_files.photo("coffee"))
        client.put_object(Bucket="old-gallery", Key="albums/1/coffee.jpg", Body=photo)
        client.put_object(Bucket="old-gallery", Key="albums/1/readme.pdf", Body=b"%PDF-1.4")
        client.put_object(Bucket="old-gallery", Key="other/skip.jpg", Body=photo)
        settings = Settings(home=tmp_path / "home", database_url=database_url, model="tiny")
        summary = import_library("s3://old-gallery/albums/", settings, s3_endpoint=endpoint)
    assert (summary["created"], summary["duplicate"], summary["rejected"]) == (1, 0, 1)


def test_an_import_scans_every_file_and_skips_the_infected(database_url, tmp_path, clamd):
    from devkit.clamd import EICAR

    (tmp_path / "lib").mkdir()
    photo = media_files.jpeg_bytes(media_files.photo("coffee"))
    (tmp_path / "lib" / "clean.jpg").write_bytes(photo)
    (tmp_path / "lib" / "infected.jpg").write_bytes(media_files.with_comment(photo, EICAR))
    settings = Settings(home=tmp_path / "home", database_url=database_url, model="tiny",
                        clamd_socket=clamd.socket_path)
    summary = import_library(str(tmp_path / "lib"), settings)
    assert (summary["created"], summary["rejected"]) == (1, 1)
    (rejected,) = summary["rejected_files"]
    assert (rejected["file"], rejected["code"]) == ("infected.jpg", "infected")
