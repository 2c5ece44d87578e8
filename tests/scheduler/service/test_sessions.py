"""The dashboard's sessions: random per sign-in, ended by sign-out and by time."""

import pytest

from scheduler.service import sessions
from scheduler.service.sessions import Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_sign_in_gets_a_session_of_its_own() -> None:
    kept = Sessions()
    first, second = kept.open(), kept.open()
    assert first != second
    assert len(first) >= 40  # 32 random bytes, URL-safe base64
    assert kept.use(first.encode()) is not None
    assert kept.use(second.encode()) is not None
    assert kept.use(b"made-up") is None


def test_sign_out_ends_a_session_and_no_other() -> None:
    kept = Sessions()
    first, second = kept.open(), kept.open()
    kept.close(first.encode())
    kept.close(b"never-opened")  # changes nothing
    assert kept.use(first.encode()) is None
    assert kept.use(second.encode()) is not None


def test_a_session_ends_when_idle_and_at_its_age() -> None:
    clock = Clock()
    kept = Sessions(idle_seconds=10, max_age_seconds=25, clock=clock)
    idle, used = kept.open(), kept.open()
    for _ in range(4):
        clock.now += 6
        assert kept.use(used.encode()) is not None  # used every 6 s: stays open
    assert kept.use(idle.encode()) is None  # unused for 24 s
    assert len(kept) == 1  # the ended one is dropped
    clock.now += 2  # 26 s after the sign-in
    assert kept.use(used.encode()) is None


def test_sessions_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 3)
    clock = Clock()
    kept = Sessions(clock=clock)
    opened = []
    for _ in range(4):
        clock.now += 1
        opened.append(kept.open())
    assert len(kept) == 3
    assert kept.use(opened[0].encode()) is None  # the oldest went
    assert all(kept.use(s.encode()) is not None for s in opened[1:])
