"""Short-lived tokens that open /api/events without an API key header.

A browser's EventSource cannot send ``Authorization``, so a page that holds a key trades it for a
token (POST /api/events/token) and puts the token in the stream's URL. The token is an HMAC over
its expiry, keyed by the secret that signs file URLs (``UrlSigner``), under a scope no storage
key can spell, so a token never passes as a file signature nor a file signature as a token. It
opens the stream and nothing else; an open stream outlives it.
"""

from __future__ import annotations

import time

from cluster.storage.signing import SignatureError, UrlSigner

# Storage keys are [A-Za-z0-9._-] segments: a space and a colon keep this out of their space.
SCOPE = "events token:v1"


class TokenError(Exception):
    """Forged, malformed or expired; the stream answers 401."""


class EventTokens:
    def __init__(self, signer: UrlSigner, lifetime_s: int) -> None:
        self._signer, self.lifetime_s = signer, lifetime_s

    def issue(self, *, now: float | None = None) -> tuple[str, int]:
        """A token and its expiry (Unix seconds)."""
        expires, signature = self._signer.sign(SCOPE, self.lifetime_s, now=now)
        return f"{expires}.{signature}", expires

    def check(self, token: str, *, now: float | None = None) -> None:
        expires, _, signature = token.partition(".")
        if not expires.isdigit() or len(expires) > 12 or not signature:
            raise TokenError("malformed token")
        try:
            self._signer.verify(SCOPE, int(expires), signature,
                                now=time.time() if now is None else now)
        except SignatureError as e:
            raise TokenError("expired token" if "expired" in str(e) else "invalid token") from None
