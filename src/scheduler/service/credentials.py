"""What a request shows to be let in: the token, or a dashboard session's cookie.

The token is compared in constant time. The cookie holds a session id that a
sign-in got (``scheduler.service.sessions``), never the token: it opens the
service until its session ends, and a copy of it ends with it.
"""

import hmac
from collections.abc import Mapping

from scheduler.service.sessions import Sessions

#: The dashboard's session cookie: HttpOnly, SameSite=Strict, never the token itself.
SESSION_COOKIE = "taskfleet_session"

#: Who a request that showed the token is (every token holder is one).
TOKEN_HOLDER = "token"


class Credentials:
    """What a request may show to be let in: one token, or a session of ``sessions``."""

    def __init__(self, token: str, sessions: Sessions) -> None:
        self.authorization = f"Bearer {token}".encode()  # the Authorization header's value
        self.sessions = sessions

    def holder(self, headers: Mapping[bytes, bytes]) -> str | None:
        """Who the request comes from: TOKEN_HOLDER for the token in the
        Authorization header, "session KEY" for an open session's cookie, None
        for neither. A wrong Authorization header is not rescued by a cookie."""
        given = headers.get(b"authorization")
        if given is not None:
            return TOKEN_HOLDER if hmac.compare_digest(given, self.authorization) else None
        session_id = cookie_of(headers.get(b"cookie", b""), SESSION_COOKIE)
        if not session_id:
            return None
        key = self.sessions.use(session_id)
        return None if key is None else f"session {key}"

    def still_valid(self, holder: str) -> bool:
        """Whether ``holder`` (as ``holder`` named it) may still be served."""
        if holder == TOKEN_HOLDER:
            return True
        return self.sessions.alive(holder.removeprefix("session "))


def cookie_of(header: bytes, name: str) -> bytes | None:
    """One cookie's value from a Cookie header."""
    for part in header.split(b";"):
        key, _, value = part.strip().partition(b"=")
        if key == name.encode():
            return value
    return None
