"""Errors the db layer raises for callers to turn into clear answers (404, 409, 400)."""


class NotFound(LookupError):
    """No row with that id."""


class IllegalTransition(ValueError):
    """The item is not in a state that allows the requested change."""

    def __init__(self, item_id: object, status: str, action: str, reason: str | None = None):
        self.item_id = item_id
        self.status = status
        self.action = action
        detail = reason or f"only allowed from {ALLOWED_FROM.get(action, '?')}"
        super().__init__(f"cannot {action} queue item {item_id}: it is {status}; {detail}")


class InvalidCursor(ValueError):
    """A pagination cursor that this server did not hand out."""


ALLOWED_FROM = {
    "cancel": "pending, queued or processing",
    "retry": "failed or cancelled",
    "release": "pending",
}
