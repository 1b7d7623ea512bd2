"""A real ClamAV daemon (Debian's ``clamd``) on a unix socket and a loopback port, with a
signature database written here: signature downloads are not possible, and a database of one
test signature loads in a fraction of a second."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cluster.media.malware import Clamd, ScannerUnavailable
from cluster.runtime import free_port

# The EICAR test file: every scanner's harmless sample (68 bytes, printable ASCII).
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
# A body pattern (.ndb): EICAR anywhere in any file, so also inside a photo that is valid
# otherwise (a hash, .hdb, would match the bare file only).
SIGNATURE = "Depthmill-Test-EICAR"
# clamd's StreamMaxLength here: small, so a test can pass it with a few MB.
STREAM_MAX_BYTES = 4 * 2**20


def clamd_binary() -> str | None:
    return shutil.which("clamd") or next(
        (p for p in ("/usr/sbin/clamd", "/usr/local/sbin/clamd") if Path(p).exists()), None)


@dataclass(frozen=True)
class RunningClamd:
    socket_path: Path
    port: int

    @property
    def unix(self) -> Clamd:
        return Clamd(socket_path=self.socket_path, timeout=10)

    @property
    def tcp(self) -> Clamd:
        return Clamd(host="127.0.0.1", port=self.port, timeout=10)


def _write_database(directory: Path) -> None:
    directory.mkdir()
    # name:target:offset:hex — target 0 is any file type, * any offset.
    (directory / "depthmill-test.ndb").write_text(f"{SIGNATURE}:0:*:{EICAR.hex()}\n")


@contextmanager
def running_clamd(binary: str, timeout: float = 60.0) -> Iterator[RunningClamd]:
    # Under /tmp, not pytest's basetemp: a unix socket's path must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="depthmill-clamd-"))
    _write_database(root / "db")
    daemon = RunningClamd(root / "clamd.sock", free_port())
    (root / "clamd.conf").write_text("\n".join([
        "Foreground yes",
        f"LocalSocket {daemon.socket_path}",
        "TCPAddr 127.0.0.1",
        f"TCPSocket {daemon.port}",
        f"DatabaseDirectory {root / 'db'}",
        f"LogFile {root / 'clamd.log'}",
        f"StreamMaxLength {STREAM_MAX_BYTES}",
        "SelfCheck 0",  # no reloads of the database mid-test
        "",
    ]))
    process = subprocess.Popen([binary, "--config-file", str(root / "clamd.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                daemon.unix.ping()
                daemon.tcp.ping()
                break
            except ScannerUnavailable:
                if process.poll() is not None:
                    log = (root / "clamd.log").read_text() if (root / "clamd.log").exists() else ""
                    raise RuntimeError(f"clamd exited ({process.returncode}): "
                                       f"{process.stderr.read().decode()}\n{log}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # polling the daemon's own answer: it is up when it answers
        yield daemon
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
