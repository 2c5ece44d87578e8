import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext

from worker.local import DIRECT_BYTES, ChunkReport, ReportSender
from worker.record_ring import RecordRing


def test_records_put_in_come_out_whole_and_free_their_space() -> None:
    ring = RecordRing(size=100)
    try:
        first = ring.put(b"a" * 60)
        assert first == (0, 60)
        assert ring.put(b"b" * 60) is None  # 40 bytes free: it goes through the pipe
        assert ring.take(*first) == b"a" * 60
        second = ring.put(b"b" * 60)  # no room before the end: it starts over at 0
        assert second == (100, 60)
        assert ring.take(*second) == b"b" * 60
    finally:
        ring.close()


def test_a_record_larger_than_the_ring_and_no_records_stay_out_of_it() -> None:
    ring = RecordRing(size=100)
    try:
        assert ring.put(b"x" * 101) is None
        assert ring.put(b"") is None
        assert ring.put(b"x" * 100) == (0, 100)  # exactly full
        assert ring.put(b"y") is None
    finally:
        ring.close()


def test_places_follow_each_other_until_the_scheduler_falls_behind() -> None:
    ring = RecordRing(size=100)
    try:
        places = [ring.put(bytes([n]) * 30) for n in range(4)]
        assert places == [(0, 30), (30, 30), (60, 30), None]
        assert [ring.take(*p) for p in places if p] == [bytes([n]) * 30 for n in range(3)]
        assert ring.put(b"z" * 30) == (100, 30)  # 10 bytes at the end were too few
    finally:
        ring.close()


def fill(ring: RecordRing, conn: Connection) -> None:
    conn.send([ring.put(bytes([n]) * 1000) for n in range(3)])


def test_a_forked_worker_writes_what_its_scheduler_reads() -> None:
    ring = RecordRing(size=10_000)
    theirs, ours = multiprocessing.Pipe()
    child = ForkContext().Process(target=fill, args=(ring, ours))
    child.start()
    try:
        places = theirs.recv()
        assert [ring.take(*place) for place in places] == [bytes([n]) * 1000 for n in range(3)]
    finally:
        child.join()
        ring.close()
    assert child.exitcode == 0


def report(chunk_id: int, records: bytes) -> ChunkReport:
    return ChunkReport("w", chunk_id, 0, 1, records, {}, 0.0, 0.0, True)


def test_big_records_take_the_ring_when_it_has_room_and_the_pipe_when_not() -> None:
    big = DIRECT_BYTES + 1
    ring = RecordRing(size=2 * big)
    theirs, ours = multiprocessing.Pipe()
    sender = ReportSender(ours, ring)
    try:
        sender.send(report(1, b"a" * big))
        sender.send(report(2, b"b" * (big + 1)))  # the first is not taken yet: the pipe
        sender.send(report(3, b"c" * 10))  # few records: in the message
        sender.close()
        first, second, third = (theirs.recv() for _ in range(3))
        assert (first.records, first.in_ring) == (b"", (0, big))
        assert ring.take(*first.in_ring) == b"a" * big
        assert (second.records, second.in_ring) == (b"b" * (big + 1), None)
        assert (third.records, third.in_ring) == (b"c" * 10, None)
    finally:
        ring.close()
