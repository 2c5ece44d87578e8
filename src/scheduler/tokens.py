"""The scheduler service's token: given, read from a file, or made on first start.

Without ``--token`` or ``--token-file``, the service uses the token in the
user's state folder (``default_token_path``), writing a new random one there
(0600) the first time. ``--new-token`` writes a new random one in place of the
file's token (the state folder's, or the ``--token-file``) before it starts.
Clients of a scheduler on this machine (a loopback address) read the same
file, so other local users, and web pages, cannot submit jobs.
"""

import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from scheduler.errors import TokenError
from scheduler.state import PRIVATE_FILE_MODE, default_token_path, private_dir

#: Shortest token accepted: shorter ones can be guessed.
MIN_TOKEN_CHARS = 16

#: Longest token accepted (it travels in every request's headers).
MAX_TOKEN_CHARS = 1024


def check_token(token: str, source: str) -> str:
    """``token`` if it is usable; TokenError names ``source`` and what is wrong."""
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(f"{source}: the token must be at least {MIN_TOKEN_CHARS} characters")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(f"{source}: the token must be at most {MAX_TOKEN_CHARS} characters")
    if not token.isascii() or not token.isprintable() or token.strip() != token:
        raise TokenError(f"{source}: the token must be printable ASCII without spaces at its ends")
    return token


def read_token_file(path: Path) -> str:
    """The token in a file (one line); refused if others may read the file."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise TokenError(f"{path}: cannot read the token: {error}") from error
    if mode & 0o077:
        raise TokenError(f"{path}: others may read this token file (chmod 600 {path})")
    return check_token(text, str(path))


def service_token(
    token: str | None, token_file: Path | None, *, new: bool = False
) -> tuple[str, str]:
    """The token a service uses and where it came from: ``token`` as given,
    else the one in ``token_file``, else the state folder's (made if missing).
    With ``new``, a new random token replaces the file's first."""
    if token is not None and token_file is not None:
        raise TokenError("give --token or --token-file, not both")
    if token is not None:
        if new:
            raise TokenError("--new-token replaces a token file's token; not one given by --token")
        return check_token(token, "--token"), "as given"
    if token_file is not None:
        if new:
            read_token_file(token_file)  # a file others may read is refused, not rewritten
            replace_token(token_file)
            return read_token_file(token_file), f"new token in {token_file}"
        return read_token_file(token_file), f"from {token_file}"
    if new:
        path = default_token_path()
        replace_token(path)
        return read_token_file(path), f"new token in {path}"
    token, path = load_or_create_token()
    return token, f"in {path}"


def write_new_token(path: Path) -> Path:
    """A file of its own beside ``path`` (0600) holding a new random token."""
    private_dir(path.parent)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(draft, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, PRIVATE_FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(secrets.token_urlsafe(32) + "\n")
    return draft


def replace_token(path: Path) -> None:
    """Put a new random token in ``path``, whole, in place of any it held."""
    draft = write_new_token(path)
    try:
        draft.replace(path)
    except OSError as error:
        draft.unlink()
        raise TokenError(f"{path}: cannot write the new token: {error.strerror}") from error


def load_or_create_token(path: Path | None = None) -> tuple[str, Path]:
    """The service's token from ``path`` (default: the state folder's), made if missing."""
    path = path or default_token_path()
    if not path.exists():
        # Written whole to a file of its own, then linked into place: a
        # scheduler starting at the same moment sees no file or a full one.
        draft = write_new_token(path)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another scheduler made it first: use that one
        finally:
            draft.unlink()
    return read_token_file(path), path


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def client_token(url: str, token: str | None, token_file: Path | None) -> str | None:
    """The token a client sends to ``url``: as given, else from ``token_file``,
    else, for a scheduler on this machine, the one in the user's state folder."""
    if token is not None:
        return token
    if token_file is not None:
        return read_token_file(token_file)
    default = default_token_path()
    if is_loopback(urlsplit(url).hostname or "") and default.exists():
        return read_token_file(default)
    return None
