"""Where a local worker leaves its reports' records for the scheduler: memory the
two share, instead of the pipe.

A report's records are JSON Lines, a megabyte for a few thousand tasks. Sent
through the pipe they cost a pickled copy, a copy into the socket, reads in
pieces and an unpickled copy at the other end: about a quarter of all the CPU a
run of `sleep 0` tasks used. Here the worker copies them into a
ring of shared memory, then sends the report through the pipe with only where
they lie; the scheduler copies them out and frees their space. A report whose
records do not fit in the space free at the time travels whole through the pipe.

A worker that dies cannot leave a report half in the ring: its records are
copied before the report is sent, and a report that never reached the pipe is
never read from the ring.

The ring is an anonymous shared mapping, so it reaches only workers forked from
the scheduler (``taskfleet run``); its pages cost memory once they are used.
"""

import mmap
import struct

#: Bytes of records one worker's ring holds: three reports of 4,096 `sleep 0`
#: records, so that the scheduler taking one frees room while the next is written.
RING_BYTES = 4 * 1024 * 1024

#: First in the mapping: how far into the ring the scheduler has taken, the
#: ring's running offset (it only grows; the byte at offset N is at N % size).
_TAKEN = struct.Struct("<Q")


class RecordRing:
    """One worker's ring. The worker ``put``s, the scheduler ``take``s, in order."""

    def __init__(self, size: int = RING_BYTES) -> None:
        self.size = size
        self._memory = mmap.mmap(-1, _TAKEN.size + size)  # shared with forked children
        self._data = memoryview(self._memory)[_TAKEN.size :]
        self._put = 0  # the worker's running offset: where its next records go

    def put(self, records: bytes) -> tuple[int, int] | None:
        """Copy records in; where they lie (running offset, length), or None if the
        free space cannot hold them (they then go through the pipe)."""
        length = len(records)
        start = self._put
        if start % self.size + length > self.size:
            start += self.size - start % self.size  # no room before the end: wrap
        if not records or start + length - self._taken() > self.size:
            return None
        self._data[start % self.size : start % self.size + length] = records
        self._put = start + length
        return start, length

    def take(self, start: int, length: int) -> bytes:
        """Copy out the records ``put`` placed at ``start``, and free their space
        (and any unused space before them)."""
        records = bytes(self._data[start % self.size : start % self.size + length])
        _TAKEN.pack_into(self._memory, 0, start + length)
        return records

    def _taken(self) -> int:
        (taken,) = _TAKEN.unpack_from(self._memory, 0)
        return int(taken)

    def close(self) -> None:
        self._data.release()
        self._memory.close()
