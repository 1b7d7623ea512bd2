"""307s to signed URLs, with how long the redirect itself may be cached."""

from __future__ import annotations

from fastapi.responses import RedirectResponse

from cluster.config.settings import Settings
from cluster.storage.caching import redirect_max_age


def signed_redirect(url: str, settings: Settings) -> RedirectResponse:
    # Private: it answers a request that may carry an API key. Shorter than the URL's lifetime,
    # so a cached redirect never leads to an expired URL.
    max_age = redirect_max_age(settings.signed_url_expiry)
    return RedirectResponse(url, status_code=307,
                            headers={"Cache-Control": f"private, max-age={max_age}"})
