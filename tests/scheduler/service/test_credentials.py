"""What lets a request in: the exact token, or the cookie of an open session."""

import pytest

from scheduler.service.credentials import SESSION_COOKIE, TOKEN_HOLDER, Credentials, cookie_of
from scheduler.service.sessions import Sessions

TOKEN = "a-token-of-thirty-two-characters"


@pytest.fixture
def credentials() -> Credentials:
    return Credentials(TOKEN, Sessions())


def test_the_token_lets_in_as_its_holder(credentials: Credentials) -> None:
    assert credentials.holder({b"authorization": f"Bearer {TOKEN}".encode()}) == TOKEN_HOLDER


@pytest.mark.parametrize(
    "cookie", ["{name}={session}", "theme=dark; {name}={session}; lang=en"], ids=["alone", "among"]
)
def test_an_open_sessions_cookie_lets_in_as_that_session(
    credentials: Credentials, cookie: str
) -> None:
    session = credentials.sessions.open()
    header = cookie.format(name=SESSION_COOKIE, session=session)
    holder = credentials.holder({b"cookie": header.encode()})
    assert holder is not None
    assert holder.startswith("session ")
    assert session not in holder  # it names the session by a digest, never the id
    assert credentials.still_valid(holder)


def test_anything_else_is_refused(credentials: Credentials) -> None:
    session = credentials.sessions.open()
    refused = [
        {},
        {b"authorization": b""},
        {b"authorization": f"Bearer {TOKEN[:-1]}".encode()},  # a prefix
        {b"authorization": f"Bearer {TOKEN}x".encode()},  # and one more
        {b"authorization": TOKEN.encode()},  # no scheme
        {b"authorization": f"Basic {TOKEN}".encode()},
        {b"cookie": f"{SESSION_COOKIE}={TOKEN}".encode()},  # the token is not a session
        {b"cookie": f"{SESSION_COOKIE}={session[:-1]}".encode()},
        {b"cookie": f"x{SESSION_COOKIE}={session}".encode()},  # another cookie's name
        {b"cookie": f"{SESSION_COOKIE}".encode()},
        {b"cookie": f"{SESSION_COOKIE}=".encode()},
        # A wrong Authorization header is not rescued by a right cookie.
        {b"authorization": b"Bearer wrong", b"cookie": f"{SESSION_COOKIE}={session}".encode()},
    ]
    for headers in refused:
        assert credentials.holder(headers) is None, headers


def test_a_closed_sessions_cookie_is_refused(credentials: Credentials) -> None:
    session = credentials.sessions.open()
    headers = {b"cookie": f"{SESSION_COOKIE}={session}".encode()}
    holder = credentials.holder(headers)
    assert holder is not None
    credentials.sessions.close(session.encode())
    assert credentials.holder(headers) is None
    assert not credentials.still_valid(holder)
    assert credentials.still_valid(TOKEN_HOLDER)


def test_cookies_are_read_by_exact_name() -> None:
    header = b"a=1; taskfleet_session=abc; b=2"
    assert cookie_of(header, SESSION_COOKIE) == b"abc"
    assert cookie_of(header, "a") == b"1"
    assert cookie_of(b"taskfleet_session_old=abc", SESSION_COOKIE) is None
    assert cookie_of(b"", SESSION_COOKIE) is None
    # A value may itself hold "=" (base64 padding, say): it is kept whole.
    assert cookie_of(b"theme=dark; pad=YQ==", "pad") == b"YQ=="
