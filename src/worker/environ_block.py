"""Erasing a secret from the environment block a process was started with.

The kernel keeps the environment a process was exec'd with in its own memory,
and ``/proc/PID/environ`` shows that memory to every process of the same user
(a task run by a worker of that user, say) for as long as the process lives.
``unsetenv`` (and so ``os.environ.pop``) only unlinks a variable from libc's
list: the text stays there. So the value is overwritten in place, through
libc's ``environ`` list, whose entries point into that block until the
process changes them.
"""

import ctypes
import sys


def erase_value(name: str) -> None:
    """Overwrite the value of every ``name=...`` entry of this process's
    environment with NUL bytes, where ``/proc/PID/environ`` reads it. Call it
    before the variable is unset: unsetting drops the entry from the list."""
    if not sys.platform.startswith("linux"):
        return  # no /proc/PID/environ to read it from
    entries = ctypes.POINTER(ctypes.c_void_p).in_dll(ctypes.CDLL(None), "environ")
    prefix = name.encode() + b"="
    index = 0
    while (address := entries[index]) is not None:
        entry = ctypes.string_at(address)
        if entry.startswith(prefix):
            ctypes.memset(address + len(prefix), 0, len(entry) - len(prefix))
        index += 1
