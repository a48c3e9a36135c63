"""The output batcher alone: bytes in, batches out, back-pressure books. No process, no loop.

The runner tests (`test_process.py`) check the same rules end to end through real pipes; here
hypothesis drives arbitrary chunkings, interleavings, flushes and consumer takes that a real child
could only produce by chance.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cc_executor.process.batcher import OutputBatcher, utf8_cut
from cc_executor.process.spec import OutputBatch

STREAMS = ("stdout", "stderr")
EURO = "€".encode()  # e2 82 ac
SMILE = "😀".encode()  # f0 9f 98 80

fast = settings(max_examples=150, deadline=None)


def take_all(b: OutputBatcher) -> list[OutputBatch]:
    out = []
    while b.ready:
        out.append(b.take())
    return out


def finish(b: OutputBatcher) -> list[OutputBatch]:
    """What the runner does at the end of both streams."""
    for s in STREAMS:
        b.cut(s, "final")
    return take_all(b)


# ---- examples, one mode at a time --------------------------------------------------------------

def test_full_cuts_only_whole_batches():
    b = OutputBatcher(batch_bytes=4, max_buffer=1 << 20)
    assert b.ingest("stdout", b"abc") is False
    assert not b.ready and b.pending("stdout") == 3  # not a whole batch yet
    b.ingest("stdout", b"defghij")
    assert [x.data for x in take_all(b)] == [b"abcd", b"efgh"]
    assert b.pending("stdout") == 2


def test_full_cut_moves_before_a_split_character():
    b = OutputBatcher(batch_bytes=4, max_buffer=1 << 20)
    b.ingest("stdout", b"ab" + EURO)  # a cut at 4 would split the euro sign
    assert [x.data for x in take_all(b)] == [b"ab"]
    assert b.pending("stdout") == 3  # less than a batch: waits for more or a flush


def test_flush_cuts_all_but_an_incomplete_tail():
    b = OutputBatcher(batch_bytes=64, max_buffer=1 << 20)
    b.ingest("stdout", b"hi " + EURO[:2])
    b.ingest("stderr", b"oops")
    assert b.flush() is True  # the half euro sign is still pending: look again later
    assert [(x.stream, x.data) for x in take_all(b)] == [("stdout", b"hi "), ("stderr", b"oops")]
    b.ingest("stdout", EURO[2:])
    assert b.flush() is False
    assert [x.data for x in take_all(b)] == [EURO]


def test_flush_passes_bytes_that_can_never_start_a_character():
    b = OutputBatcher(batch_bytes=64, max_buffer=1 << 20)
    b.ingest("stdout", b"a\xff")
    assert b.flush() is False
    assert [x.data for x in take_all(b)] == [b"a\xff"]


def test_final_cut_lets_an_incomplete_tail_go_as_it_is():
    b = OutputBatcher(batch_bytes=64, max_buffer=1 << 20)
    b.ingest("stdout", b"x" + SMILE[:3])
    b.flush()
    assert [x.data for x in take_all(b)] == [b"x"]
    b.cut("stdout", "final")
    assert [x.data for x in take_all(b)] == [SMILE[:3]]
    assert b.pending("stdout") == 0


def test_final_cut_sends_a_held_back_character_whole():
    b = OutputBatcher(batch_bytes=4, max_buffer=1 << 20)
    b.ingest("stdout", b"abc" + EURO)  # a full cut at 4 would split it: "abc" goes alone
    assert [x.data for x in take_all(b)] == [b"abc"]
    b.cut("stdout", "final")
    assert [x.data for x in take_all(b)] == [EURO]


def test_seq_runs_across_streams_and_offsets_per_stream():
    b = OutputBatcher(batch_bytes=2, max_buffer=1 << 20)
    b.ingest("stdout", b"aaa")
    b.ingest("stderr", b"bb")
    b.ingest("stdout", b"a")
    got = [(x.stream, x.seq, x.offset, x.data) for x in take_all(b)]
    assert got == [("stdout", 0, 0, b"aa"), ("stderr", 1, 0, b"bb"), ("stdout", 2, 2, b"aa")]
    assert b.batches_made == 3


def test_hold_back_past_the_limit_and_resume_at_half():
    b = OutputBatcher(batch_bytes=10, max_buffer=100)
    assert b.ingest("stdout", b"x" * 100) is False  # at the limit is not past it
    assert b.ingest("stdout", b"x" * 20) is True
    assert b.held_back and b.queued == 120
    for _ in range(6):  # 120 -> 60: still more than half of max_buffer
        b.take()
        assert not b.may_resume
    b.take()  # 50
    assert b.may_resume
    b.resume()
    assert not b.held_back and not b.may_resume


def test_pending_bytes_count_as_queued():
    b = OutputBatcher(batch_bytes=1000, max_buffer=100)
    assert b.ingest("stderr", b"y" * 101) is True  # nothing cut, still over the limit
    assert not b.ready and b.queued == 101


def test_drain_reads_past_max_buffer_by_its_allowance_only():
    b = OutputBatcher(batch_bytes=10, max_buffer=100)
    b.ingest("stdout", b"x" * 150)
    assert b.held_back
    b.start_drain(allowance=50)
    assert not b.held_back and not b.drain_overflowed
    assert b.ingest("stdout", b"x" * 50) is False  # queued 200 = 150 + allowance: allowed
    assert b.ingest("stdout", b"x") is True  # past the allowance: a writer is alive
    assert b.drain_overflowed and b.held_back


def test_drain_budget_counts_bytes_even_when_the_consumer_keeps_up():
    b = OutputBatcher(batch_bytes=10, max_buffer=100)
    b.start_drain(allowance=30)
    for _ in range(3):
        assert b.ingest("stdout", b"z" * 10) is False
        take_all(b)
    assert b.queued == 0
    assert b.ingest("stdout", b"z") is True and b.drain_overflowed


def test_utf8_cut_never_goes_past_the_buffer():
    assert utf8_cut(b"abc", 10) == 3
    assert utf8_cut(b"", 4) == 0


def test_a_batch_smaller_than_a_character_still_delivers_it():
    """batch_bytes below 4 cannot hold a whole character: the character is split, as bytes."""
    b = OutputBatcher(batch_bytes=2, max_buffer=1 << 20)
    b.ingest("stdout", "aé€b".encode())
    assert b"".join(x.data for x in finish(b)) == "aé€b".encode()


# ---- properties ---------------------------------------------------------------------------------

def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


@st.composite
def feeds(draw, payload=st.binary(max_size=400)):
    """Both streams' bytes, each cut into arbitrary chunks, interleaved arbitrarily, with
    flushes and consumer takes in between: [("ingest", stream, chunk) | ("flush",) | ("take",)]."""
    chunks = {s: split(draw(payload), draw(st.lists(st.integers(0, 400), max_size=12)))
              for s in STREAMS}
    want = {s: b"".join(chunks[s]) for s in STREAMS}
    ops = []
    while chunks["stdout"] or chunks["stderr"]:
        s = draw(st.sampled_from([s for s in STREAMS if chunks[s]]))
        ops.append(("ingest", s, chunks[s].pop(0)))
        ops.extend(draw(st.lists(st.sampled_from([("flush",), ("take",)]), max_size=2)))
    return want, ops


def replay(b: OutputBatcher, ops) -> list[OutputBatch]:
    """Run `ops`, then end both streams; returns every batch in the order taken. Checks on the
    way that a flush leaves only what may still become a character (3 bytes at most)."""
    taken = []
    for op in ops:
        if op[0] == "ingest":
            b.ingest(op[1], op[2])
        elif op[0] == "flush":
            left = b.flush()
            assert left == any(b.pending(s) for s in STREAMS)
            assert all(b.pending(s) <= 3 for s in STREAMS)
        else:
            taken += take_all(b)
    return taken + finish(b)


def utf8_text(max_size=150):
    return st.text(st.characters(codec="utf-8"), max_size=max_size).map(str.encode)


@fast
@given(feed=feeds(), batch_bytes=st.integers(4, 64))
def test_batches_are_lossless_bounded_and_numbered(feed, batch_bytes):
    want, ops = feed
    b = OutputBatcher(batch_bytes, max_buffer=1 << 20)
    batches = replay(b, ops)
    assert [x.seq for x in batches] == list(range(len(batches)))
    assert b.batches_made == len(batches)
    for s in STREAMS:
        mine = [x for x in batches if x.stream == s]
        assert b"".join(x.data for x in mine) == want[s]
        offsets = [sum(len(x.data) for x in mine[:i]) for i in range(len(mine))]
        assert [x.offset for x in mine] == offsets
        assert b.pending(s) == 0
    assert all(0 < len(x.data) <= batch_bytes for x in batches)
    assert b.queued == 0


@fast
@given(feed=feeds(payload=utf8_text()), batch_bytes=st.integers(4, 64))
def test_valid_utf8_batches_decode_on_their_own(feed, batch_bytes):
    _, ops = feed
    b = OutputBatcher(batch_bytes, max_buffer=1 << 20)
    for x in replay(b, ops):
        x.data.decode()  # cut by a flush, a full batch or the end: never inside a character


@fast
@given(ops=st.lists(st.one_of(st.tuples(st.just("ingest"), st.sampled_from(STREAMS),
                                        st.integers(1, 70)),
                              st.tuples(st.just("take"), st.integers(1, 5))), max_size=60),
       max_buffer=st.integers(1, 200), batch_bytes=st.integers(4, 40))
def test_back_pressure_holds_past_the_limit_and_resumes_at_half(ops, max_buffer, batch_bytes):
    b = OutputBatcher(batch_bytes, max_buffer)
    queued = 0
    for op in ops:
        if op[0] == "ingest":
            queued += op[2]
            hold = b.ingest(op[1], b"q" * op[2])
            assert hold == (queued > max_buffer)
            if hold:
                assert b.held_back
        else:
            for _ in range(op[1]):
                if not b.ready:
                    break
                queued -= len(b.take().data)
                assert b.may_resume == (b.held_back and queued <= max_buffer // 2)
                if b.may_resume:
                    b.resume()
        assert b.queued == queued
        if b.held_back:
            assert queued > max_buffer // 2  # never left held back once allowed to read again
