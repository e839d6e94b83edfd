"""Cursors of paginated lists (API.md: `?limit=&cursor=` -> `{"items", "next_cursor"}`).

A cursor is the last id of a page, opaque to clients; one that this service did not give out is a
422 that says to start again."""
import base64

from loyalty.errors import ValidationFailed


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        value = int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
        if not 0 < value < 2**63:
            raise ValueError(value)
        return value
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("The cursor is not one this service gave out; start again without it.",
                               errors={"cursor": ["Invalid cursor."]}) from None
