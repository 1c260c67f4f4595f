"""Frames between the HTTP processes and the SQLite storage process."""

from __future__ import annotations

from tally.model import IngestResult, NewEvent
from tally.storage.process import frames as wire


def test_frames_split_anywhere_come_out_whole_and_in_order() -> None:
    frames = [(wire.INGEST, 1, b"abc"), (wire.CALL, 2, b""), (wire.RESULT, 2**40, b"x" * 70_000)]
    stream = b"".join(wire.frame(*f) for f in frames)
    for step in (1, 7, 4096, len(stream)):
        reader = wire.FrameReader()
        out = []
        for at in range(0, len(stream), step):
            out.extend(reader.feed(stream[at : at + step]))
        assert out == frames


def test_events_and_results_survive_the_trip() -> None:
    event = NewEvent(
        environment_id="env_1",
        type="track",
        status="pending",
        body='{"event":"api-call"}',
        quantity=-3,
        captured_at=1,
        received_at=2,
        subtype="api-call",
        idempotency_key="k",
        sent_at=-5,
        trusted_client_clock=True,
        backfill=True,
        user_agent="ü",
    )
    assert wire.decode_events(wire.encode_events([[event], []])) == [[event], []]
    results = [[IngestResult("evt_1", 2**62, True)], []]
    assert wire.decode_results(wire.encode_results(results)) == results
