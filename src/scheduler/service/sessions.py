"""The dashboard's sessions: each sign-in gets a random id that the service
keeps in memory, and that ends when its holder signs out, when it has not
been used for ``idle_seconds``, ``max_age_seconds`` after the sign-in, or when
the service stops (a restart asks every browser for the token again).

Only a digest of each id is kept, and looked up by it: the id itself never
sits in the service's memory after the answer to the sign-in has gone, and
a lookup's timing says nothing about the ids that exist.
"""

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

#: A session not used for this long ends (12 hours).
IDLE_SECONDS = 12 * 3600.0

#: A session ends this long after its sign-in, used or not (7 days).
MAX_AGE_SECONDS = 7 * 24 * 3600.0

#: Sessions kept at once; past it, a sign-in ends the oldest (only a token
#: holder can sign in, so this bounds memory, not an attacker).
MAX_SESSIONS = 10_000


@dataclass
class Session:
    began: float
    last_used: float


def digest(session_id: bytes) -> str:
    return hashlib.sha256(session_id).hexdigest()


class Sessions:
    """The open sessions of one service (used from its event loop only)."""

    def __init__(
        self,
        idle_seconds: float = IDLE_SECONDS,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._open: dict[str, Session] = {}  # by the digest of the id

    def open(self) -> str:
        """A new session; its id (for the cookie)."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        if len(self._open) >= MAX_SESSIONS:
            oldest = min(self._open, key=lambda key: self._open[key].began)
            del self._open[oldest]
        self._open[digest(session_id.encode())] = Session(now, now)
        return session_id

    def use(self, session_id: bytes) -> str | None:
        """The session's key (its id's digest) if it is open, noting the use; else None."""
        key = digest(session_id)
        if not self.alive(key):
            return None
        self._open[key].last_used = self.clock()
        return key

    def alive(self, key: str) -> bool:
        """Whether the session of ``key`` is still open (a session found ended is dropped)."""
        session = self._open.get(key)
        if session is None:
            return False
        now = self.clock()
        if (
            now - session.last_used > self.idle_seconds
            or now - session.began > self.max_age_seconds
        ):
            del self._open[key]
            return False
        return True

    def close(self, session_id: bytes) -> None:
        """End a session (sign-out); an unknown id changes nothing."""
        self._open.pop(digest(session_id), None)

    def __len__(self) -> int:
        return len(self._open)
