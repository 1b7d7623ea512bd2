"""Signed URLs for the local storage backend: the gateway hands out
``/api/files/{key}?expires=…&signature=…`` and verifies the HMAC before serving the object."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path


class SignatureError(Exception):
    """The URL was tampered with or has expired; the gateway answers 403."""


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a signing secret needs at least 16 bytes")
        self._secret = secret

    @classmethod
    def from_home(cls, home: Path, secret: str | None = None) -> UrlSigner:
        """Use the configured secret, or one generated once and kept under ``home`` so that
        URLs stay valid across restarts (and across the processes of one installation)."""
        if secret:
            return cls(secret.encode())
        path = home / "signing_secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            # First writer wins; a concurrent starter reads the same secret back.
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return cls(path.read_text().strip().encode())

    def derive(self, purpose: str) -> bytes:
        """A secret of its own for another use of the server secret (API key hashes), so that
        no value made for one use is ever valid for another."""
        return hmac.new(self._secret, f"depthmill {purpose}".encode(), hashlib.sha256).digest()

    def api_key_secret(self) -> bytes:
        """What API key hashes are made with: the gateway that checks keys and the command that
        makes them must agree."""
        return self.derive("api keys")

    def _mac(self, key: str, expires: int) -> str:
        message = f"{key}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, key: str, expires_in: int, *, now: float | None = None) -> tuple[int, str]:
        expires = int((time.time() if now is None else now) + expires_in)
        return expires, self._mac(key, expires)

    def verify(self, key: str, expires: int, signature: str, *, now: float | None = None) -> None:
        # Bytes: compare_digest refuses non-ASCII str, and a signature is anyone's input.
        if not hmac.compare_digest(self._mac(key, expires).encode(), signature.encode()):
            raise SignatureError("invalid signature")
        if (time.time() if now is None else now) > expires:
            raise SignatureError("signed URL has expired")
