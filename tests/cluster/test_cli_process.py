"""`depthmill process` on folders: what is not a photo or video is skipped and listed, not
counted as a failure."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from cluster.cli import process
from cluster.config.settings import Settings
from devkit import media_files


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "library"
    (folder / "trip").mkdir(parents=True)
    jpeg = media_files.jpeg_bytes(media_files.photo("coffee"))
    (folder / "a.jpg").write_bytes(jpeg)
    (folder / "trip" / "no-extension").write_bytes(jpeg)  # media by its bytes
    (folder / "broken.jpg").write_bytes(b"not really")  # media by its name: a failure to report
    for name, body in [("a.jpg.xmp", b"<x:xmpmeta/>"), ("a.json", b"{}"), ("notes.txt", b"hi"),
                       (".DS_Store", b"\0\0\0\1Bud1"), ("trip/a.xmp", b"<x/>")]:
        (folder / name).write_bytes(body)
    return folder


def test_sidecars_and_other_files_in_a_folder_are_skipped(tmp_path):
    folder = _folder(tmp_path)
    files, skipped = process.collect([folder])
    assert sorted(p.relative_to(folder).as_posix() for p in files) == [
        "a.jpg", "broken.jpg", "trip/no-extension"]
    assert sorted(p.relative_to(folder).as_posix() for p in skipped) == [
        ".DS_Store", "a.jpg.xmp", "a.json", "notes.txt", "trip/a.xmp"]
    # Named on the command line, a file is processed whatever it is.
    assert process.collect([folder / "notes.txt"]) == ([folder / "notes.txt"], [])


def test_the_skipped_files_are_listed(tmp_path, monkeypatch):
    folder = tmp_path / "sidecars"
    folder.mkdir()
    (folder / "a.xmp").write_bytes(b"<x/>")
    (folder / "b.txt").write_bytes(b"hi")

    def no_up(*a, **k):
        raise AssertionError("nothing to process, yet it started the system")

    monkeypatch.setattr(process.runtime, "up", no_up)
    console = Console(record=True, width=200)
    assert process.process_paths(Settings(home=tmp_path), [folder], console, timeout=1) == 0
    out = console.export_text()
    assert "skipped 2 files that are not photos or videos" in out
    assert "a.xmp" in out and "b.txt" in out


def test_a_model_that_cannot_load_is_one_sentence_and_starts_nothing(tmp_path):
    # It printed Serve's 20-line traceback ("Failed to update the deployments ['DepthModel']")
    # and left the Ray head it had started running.
    import os
    import subprocess
    import sys

    photo = tmp_path / "a.jpg"
    photo.write_bytes(media_files.jpeg_bytes(media_files.photo("coffee")))
    home = tmp_path / "home"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DEPTHMILL_HOME": str(home),
           "HF_HOME": str(tmp_path / "hf")}
    # A Ray address nothing answers at: a regression fails here rather than joining (and
    # deploying on) whatever Ray cluster this machine runs.
    from cluster.runtime import free_port

    env["RAY_ADDRESS"] = f"127.0.0.1:{free_port()}"
    env.pop("DEPTHMILL_MODEL", None)
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "process", "--model", "some/unknown-id", str(photo)],
        capture_output=True, text=True, env=env, timeout=300, cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "could not load depth model 'some/unknown-id'" in lines[0]
    assert "--model tiny" in lines[0] and "local model directory" in lines[0]
    assert not (home / "ray_started_by_depthmill").exists()  # no Ray head of its own left
    assert not (home / "postgres" / "postmaster.pid").exists()


def test_exports_go_in_each_files_folder_relative_to_its_path(tmp_path):
    folder = _folder(tmp_path)
    single = tmp_path / "single.jpg"
    single.write_bytes(b"x")
    paths = [folder, single]
    assert process.folder_within(folder / "a.jpg", paths) == ""
    assert process.folder_within(folder / "trip" / "no-extension", paths) == "trip"
    assert process.folder_within(single, paths) == ""


def test_a_bad_layout_is_one_sentence_listing_the_valid_ones(tmp_path, monkeypatch, capsys):
    from cluster.cli import main

    def no_up(*a, **k):
        raise AssertionError("a bad option, yet it started the system")

    monkeypatch.setattr(process.runtime, "up", no_up)
    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    photo = tmp_path / "a.jpg"
    photo.write_bytes(media_files.jpeg_bytes(media_files.photo("coffee")))
    code = main(["process", str(photo), "--out", str(tmp_path / "out"), "--layout", "sbs,3d"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert "'3d'" in lines[0] and "sbs, sbs-half, tb, tb-half, crosseye, anaglyph, rgbd" in lines[0]
    assert main(["process", str(photo), "--layout", "sbs"]) == 2
    assert "--out" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
