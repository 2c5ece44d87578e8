"""The stack's setup script: the user's shell script an instance runs at boot,
before its worker starts (image/bootstrap.sh runs it; a failure ends the
instance).

It travels inside the user data, not as an S3 asset: boot then needs no second
download and no second grant, and a baked image with no aws CLI runs it too.
The price is a bound on its size, as EC2 holds at most 16 KB of user data
(raw, before base64); what needs more belongs in a baked image
(``taskfleet:amiId``) or in a script that fetches it.
"""

from pathlib import Path

#: Where the user data puts the script and where bootstrap.sh looks for it.
SETUP_SCRIPT_PATH = "/etc/taskfleet/setup.sh"

#: The largest setup script, in bytes. EC2 takes 16,384 bytes of user data;
#: bootstrap.sh and the settings before it take about 6 KiB of it.
MAX_SETUP_SCRIPT_BYTES = 8 * 1024

#: The here-document's end: a script line equal to it would cut the script short.
END_MARK = "TASKFLEET_SETUP_SCRIPT_END"


def read_setup_script(value: object) -> str | None:
    """The setup script named by a setting (None when it is empty), checked;
    ValueError says why a file cannot be one."""
    name = str(value).strip()
    if not name:
        return None
    path = Path(name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except IsADirectoryError:
        raise ValueError("is a directory, not a script") from None
    except OSError as error:
        raise ValueError(f"cannot be read: {error.strerror}") from None
    if len(data) > MAX_SETUP_SCRIPT_BYTES:
        raise ValueError(
            f"is {len(data)} bytes, more than the {MAX_SETUP_SCRIPT_BYTES} a setup script"
            " may have (it travels in the instance's 16 KB of user data); bake an image"
            " (taskfleet:amiId) or fetch the rest from the script"
        )
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None
    if END_MARK in text.splitlines():
        raise ValueError(f"has a line {END_MARK}, which ends the script in the user data")
    if not text.strip():
        raise ValueError("is empty")
    return text


def setup_script_commands(script: str) -> str:
    """User-data commands that write ``script`` where bootstrap.sh runs it,
    root's alone (tasks have no business reading or changing it)."""
    body = script if script.endswith("\n") else script + "\n"
    return (
        "install -d -m 0755 /etc/taskfleet\n"
        f"(umask 077; cat > {SETUP_SCRIPT_PATH}) <<'{END_MARK}'\n"
        f"{body}{END_MARK}"
    )
