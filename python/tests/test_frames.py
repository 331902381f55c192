"""Frames (D1): decode_frames, the streaming Decoder and build_frames, against
crates/ecr-proto/tests/data/vectors.json."""

from __future__ import annotations

from typing import Any

import pytest

import ecr_sniff
from ecr_sniff import Decoder, Frame, Rejected, Skipped

SPEC_SAMPLE = bytes.fromhex(
    "2f6e011001007f00747b22636f6e74656e74223a227b5c22616d745c223a3130302c5c226368616e6e656c"
    "5c223a5c2277785c222c5c2266756e63547970655c223a312c5c226d6f64655c223a317d222c2264696765"
    "7374223a223266306334363833653235613762393430373236353033333037306539303334227d2f6e"
)


def test_frame_vectors_decode_field_by_field(vectors: dict[str, Any]) -> None:
    for v in vectors["frames"]:
        raw = bytes.fromhex(v["hex"])
        frames = ecr_sniff.decode_frames(raw)
        assert len(frames) == 1, v["name"]
        f = frames[0]
        assert isinstance(f, Frame)
        assert (f.version, f.type, f.ref) == (v["version"], v["type"], v["ref"]), v["name"]
        assert (f.total_len, f.data_len) == (v["total_len"], v["data_len"]), v["name"]
        assert f.data == bytes.fromhex(v["data_hex"]), v["name"]
        assert f.raw == raw and bytes(f) == raw and len(f) == len(raw)
        assert f.offset == 0 and not f.is_fragment


def test_frame_type_names() -> None:
    ack, err = ecr_sniff.decode_frames(
        bytes.fromhex("2f6e012005000b00002f6e") + bytes.fromhex("2f6e013309000b00002f6e")
    )
    assert (ack.type_name, ack.description) == ("ack", "ack")
    assert err.type_name == "error"
    assert err.description == "error 0x33 (decryption error)"
    assert err.offset == 11


def test_split_vector_builds_and_decodes(vectors: dict[str, Any]) -> None:
    for v in vectors["split"]:
        data = bytes.fromhex(v["data_hex"])
        expected = [bytes.fromhex(h) for h in v["fragments_hex"]]
        frame_type, ref = expected[0][3], expected[0][4]
        built = ecr_sniff.build_frames(data, ref, frame_type)
        assert built == b"".join(expected), v["name"]
        frames = ecr_sniff.decode_frames(built)
        assert [f.raw for f in frames] == expected
        assert all(f.data_len == len(data) and f.is_fragment for f in frames)
        assert b"".join(f.data for f in frames) == data


def test_build_frames_single_frame_is_the_spec_sample() -> None:
    f = ecr_sniff.decode_frames(SPEC_SAMPLE)[0]
    assert ecr_sniff.build_frames(f.data, 1) == SPEC_SAMPLE
    assert ecr_sniff.build_frames(b"", 5, ecr_sniff.ACK) == bytes.fromhex("2f6e012005000b00002f6e")


def test_build_frames_refuses_what_does_not_fit() -> None:
    with pytest.raises(ecr_sniff.FrameBuildError, match="do not fit"):
        ecr_sniff.build_frames(bytes(70000), 1)
    with pytest.raises(OverflowError):
        ecr_sniff.build_frames(b"x", 256)


def test_decoder_byte_by_byte_equals_whole(vectors: dict[str, Any]) -> None:
    stream = b"".join(bytes.fromhex(v["hex"]) for v in vectors["frames"])
    dec = Decoder()
    got: list[Any] = []
    for i, b in enumerate(stream):
        got += dec.feed(bytes([b]), ts=1_000 + i)
    got += dec.finish()
    whole = ecr_sniff.decode_frames(stream)
    assert [f.raw for f in got] == [f.raw for f in whole]
    first = got[0]
    assert first.first_ts == 1_000 and first.last_ts == 1_000 + len(SPEC_SAMPLE) - 1
    assert dec.stats == {"bytes": len(stream), "frames": 3, "rejected": 0, "skipped_bytes": 0}
    assert dec.offset == len(stream) and dec.buffered == 0


def test_decoder_accounts_for_garbage_rejected_and_truncated() -> None:
    ack = bytes.fromhex("2f6e012005000b00002f6e")
    bad_version = bytes.fromhex("2f6e022005000b00002f6e")
    dec = Decoder()
    events = dec.feed(b"junk" + ack + bad_version + ack[:5], ts=7)
    events += dec.finish()
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Skipped", "Frame", "Rejected", "Skipped"], events
    junk, frame, rejected, cut = events
    assert (junk.offset, junk.length, junk.cause, len(junk)) == (0, 4, "not-a-frame", 4)
    assert isinstance(frame, Frame) and frame.offset == 4
    assert isinstance(rejected, Rejected)
    assert rejected.version == 2 and "version" in rejected.error and rejected.raw == bad_version
    assert isinstance(cut, Skipped) and cut.cause == "truncated" and cut.length == 5
    assert junk.first_ts == 7
    stats = dec.stats
    assert stats["bytes"] == 4 + 11 + 11 + 5
    assert stats["skipped_bytes"] == 9 and stats["frames"] == 1 and stats["rejected"] == 1


def test_decoder_gap_resynchronises() -> None:
    ack = bytes.fromhex("2f6e012005000b00002f6e")
    dec = Decoder()
    assert dec.feed(ack[:6]) == []
    assert dec.buffered == 6
    lost = dec.gap(100)
    assert len(lost) == 1 and lost[0].cause == "truncated"
    after = dec.feed(ack)
    assert [type(e) for e in after] == [Frame] and after[0].offset == 106


def test_decode_frames_hides_everything_but_frames() -> None:
    ack = bytes.fromhex("2f6e012005000b00002f6e")
    frames = ecr_sniff.decode_frames(b"\x00\xff" + ack + b"zz" + ack + ack[:4])
    assert [f.offset for f in frames] == [2, 15]


def test_bytes_like_inputs_and_type_errors() -> None:
    assert ecr_sniff.decode_frames(bytearray(SPEC_SAMPLE))[0].raw == SPEC_SAMPLE
    assert ecr_sniff.decode_frames(memoryview(SPEC_SAMPLE))[0].raw == SPEC_SAMPLE
    with pytest.raises(TypeError, match="bytes, bytearray or memoryview"):
        ecr_sniff.decode_frames(SPEC_SAMPLE.hex())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Decoder().feed([1, 2, 3])  # type: ignore[arg-type]


def test_untrusted_bytes_never_raise() -> None:
    # Every prefix and a few corruptions of a valid stream: the decoder must account
    # for every byte and never raise.
    stream = SPEC_SAMPLE + bytes.fromhex("2f6e012005000b00002f6e")
    variants = [stream[:i] for i in range(len(stream))]
    variants += [stream[:i] + bytes([stream[i] ^ 0xFF]) + stream[i + 1 :] for i in range(0, len(stream), 7)]
    for v in variants:
        dec = Decoder()
        events = dec.feed(v) + dec.finish()
        covered = sum(len(e.raw) if isinstance(e, (Frame, Rejected)) else e.length for e in events)
        assert covered == len(v)
