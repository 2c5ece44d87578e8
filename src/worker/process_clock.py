"""How long this process has lived, its interpreter's start-up included.

Kept apart and light (standard library only) because the CLI reads it at the end
of every command, and the worker at its start.
"""

import os
import time


def process_age() -> float | None:
    """Seconds since this process started (Linux: from /proc), its start-up included;
    None where that cannot be read."""
    try:
        with open("/proc/self/stat") as stat:
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
