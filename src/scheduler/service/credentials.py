"""What a request shows to be let in: the token, or the dashboard's session cookie.

Both are compared in constant time. The cookie holds a keyed hash of the token,
never the token: it opens the dashboard, is worthless elsewhere, and ends when
the token changes.
"""

import hmac
from collections.abc import Mapping
from typing import NamedTuple

#: The dashboard's session cookie: HttpOnly, SameSite=Strict, never the token itself.
SESSION_COOKIE = "taskfleet_session"


def session_value(token: str) -> str:
    """The session cookie's value for a token: a keyed hash of it, so the cookie
    opens the dashboard, is worthless elsewhere, and ends when the token changes."""
    return hmac.new(token.encode(), b"taskfleet dashboard session", "sha256").hexdigest()


class Credentials(NamedTuple):
    """What a request may show to be let in, for one token."""

    authorization: bytes  # the Authorization header's value
    session: bytes  # the session cookie's value

    @classmethod
    def for_token(cls, token: str) -> "Credentials":
        return cls(f"Bearer {token}".encode(), session_value(token).encode())

    def shown_by(self, headers: Mapping[bytes, bytes]) -> bool:
        """The token in the Authorization header, or the session cookie for it
        (compared in constant time)."""
        given = headers.get(b"authorization")
        if given is not None:
            return hmac.compare_digest(given, self.authorization)
        session = cookie_of(headers.get(b"cookie", b""), SESSION_COOKIE)
        return session is not None and hmac.compare_digest(session, self.session)


def cookie_of(header: bytes, name: str) -> bytes | None:
    """One cookie's value from a Cookie header."""
    for part in header.split(b";"):
        key, _, value = part.strip().partition(b"=")
        if key == name.encode():
            return value
    return None
