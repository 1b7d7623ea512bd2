"""Short-lived tokens that open /api/events without an API key header.

A browser's EventSource cannot send ``Authorization``, so a page that holds a key trades it for a
token (POST /api/events/token) and puts the token in the stream's URL. The token is an HMAC over
the key it was issued for and its expiry, keyed by the secret that signs file URLs
(``UrlSigner``), under a scope no storage key can spell, so a token never passes as a file
signature nor a file signature as a token. It opens the stream and nothing else, and only while
its key is still usable (the stream route asks; revoking a key ends its tokens); an open stream
outlives it.
"""

from __future__ import annotations

import time
import uuid

from cluster.storage.signing import SignatureError, UrlSigner

# Storage keys are [A-Za-z0-9._-] segments: a space and a colon keep this out of their space.
SCOPE = "events token:v2"
ENV_KEYS = "env"  # the subject of a token issued to a DEPTHMILL_API_KEYS key, which has no id


class TokenError(Exception):
    """Forged, malformed or expired; the stream answers 401."""


class EventTokens:
    def __init__(self, signer: UrlSigner, lifetime_s: int) -> None:
        self._signer, self.lifetime_s = signer, lifetime_s

    def issue(self, key_id: uuid.UUID | None, *, now: float | None = None) -> tuple[str, int]:
        """A token for the key ``key_id`` (None: an environment key) and its expiry (Unix
        seconds)."""
        subject = key_id.hex if key_id else ENV_KEYS
        expires, signature = self._signer.sign(f"{SCOPE} {subject}", self.lifetime_s, now=now)
        return f"{subject}.{expires}.{signature}", expires

    def check(self, token: str, *, now: float | None = None) -> uuid.UUID | None:
        """The id of the key the token was issued for (None: an environment key)."""
        subject, _, rest = token.partition(".")
        expires, _, signature = rest.partition(".")
        if not expires.isdigit() or len(expires) > 12 or not signature or not _subject_ok(subject):
            raise TokenError("malformed token")
        try:
            self._signer.verify(f"{SCOPE} {subject}", int(expires), signature,
                                now=time.time() if now is None else now)
        except SignatureError as e:
            raise TokenError("expired token" if "expired" in str(e) else "invalid token") from None
        return None if subject == ENV_KEYS else uuid.UUID(hex=subject)


def _subject_ok(subject: str) -> bool:
    return subject == ENV_KEYS or (
        len(subject) == 32 and all(c in "0123456789abcdef" for c in subject))
