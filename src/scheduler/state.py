"""Where the scheduler keeps its files, and how they are kept private.

The journal holds every task's output and the token file the service's
secret: both live in a folder only their owner may enter (0700), each file
readable by its owner alone (0600), whatever the umask says.
"""

import os
from pathlib import Path

#: Mode of the state folder and of every file in it.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def state_dir() -> Path:
    """taskfleet's folder in the user's state directory (XDG_STATE_HOME)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "taskfleet"


def default_journal_path() -> Path:
    return state_dir() / "journal.sqlite3"


def default_token_path() -> Path:
    return state_dir() / "token"


def private_dir(path: Path) -> None:
    """Make ``path`` (and its parents) exist; ``path`` itself is closed to others.

    A folder that exists already keeps its mode unless it is taskfleet's own
    state folder: a journal given in /tmp must not chmod /tmp.
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if path == state_dir():
        path.chmod(PRIVATE_DIR_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` if missing and make it readable by its owner alone."""
    private_dir(path.parent)
    descriptor = os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE_MODE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE_MODE)
    finally:
        os.close(descriptor)
