"""What lets a request in: the exact token, or the session cookie made from it."""

import pytest

from scheduler.service.credentials import (
    SESSION_COOKIE,
    Credentials,
    cookie_of,
    session_value,
)

TOKEN = "a-token-of-thirty-two-characters"
SESSION = session_value(TOKEN)  # made at import; the credentials in each test, as they run


@pytest.mark.parametrize(
    "headers",
    [
        {b"authorization": f"Bearer {TOKEN}".encode()},
        {b"cookie": f"{SESSION_COOKIE}={SESSION}".encode()},
        {b"cookie": f"theme=dark; {SESSION_COOKIE}={SESSION}; lang=en".encode()},
    ],
)
def test_the_token_or_its_session_lets_in(headers: dict[bytes, bytes]) -> None:
    assert Credentials.for_token(TOKEN).shown_by(headers)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {b"authorization": b""},
        {b"authorization": f"Bearer {TOKEN[:-1]}".encode()},  # a prefix
        {b"authorization": f"Bearer {TOKEN}x".encode()},  # and one more
        {b"authorization": TOKEN.encode()},  # no scheme
        {b"authorization": f"Basic {TOKEN}".encode()},
        {b"cookie": f"{SESSION_COOKIE}={TOKEN}".encode()},  # the token is not a session
        {b"cookie": f"{SESSION_COOKIE}={SESSION[:-1]}".encode()},
        {b"cookie": f"x{SESSION_COOKIE}={SESSION}".encode()},  # another cookie's name
        {b"cookie": f"{SESSION_COOKIE}".encode()},
        # A wrong Authorization header is not rescued by a right cookie.
        {b"authorization": b"Bearer wrong", b"cookie": f"{SESSION_COOKIE}={SESSION}".encode()},
    ],
)
def test_anything_else_is_refused(headers: dict[bytes, bytes]) -> None:
    assert not Credentials.for_token(TOKEN).shown_by(headers)


def test_a_session_is_the_tokens_own_and_never_the_token() -> None:
    assert session_value(TOKEN) == SESSION
    assert session_value(TOKEN + "x") != SESSION
    assert TOKEN not in SESSION
    assert len(SESSION) == 64  # SHA-256, hex


def test_cookies_are_read_by_exact_name() -> None:
    header = b"a=1; taskfleet_session=abc; b=2"
    assert cookie_of(header, SESSION_COOKIE) == b"abc"
    assert cookie_of(header, "a") == b"1"
    assert cookie_of(b"taskfleet_session_old=abc", SESSION_COOKIE) is None
    assert cookie_of(b"", SESSION_COOKIE) is None
    # A value may itself hold "=" (base64 padding, say): it is kept whole.
    assert cookie_of(b"theme=dark; pad=YQ==", "pad") == b"YQ=="
