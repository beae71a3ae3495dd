"""streaming.rtp: the video buffer (server webcam, Python client) passes a frame on at its marker packet,
as a browser does, not when the next frame begins; gaps and late packets never give a broken frame."""
import pytest

pytest.importorskip("aiortc")


def _packet(seq: int, ts: int, data: bytes, marker: bool):
    from aiortc.rtp import RtpPacket
    p = RtpPacket(payload_type=96, marker=int(marker), sequence_number=seq, timestamp=ts)
    p._data = data
    return p


def test_frames_are_passed_on_at_their_marker_packet():
    from streaming.rtp import marker_frame_buffer
    buf = marker_frame_buffer()
    got = [buf.add(_packet(100, 3000, b"a1", False))[1], buf.add(_packet(101, 3000, b"a2", False))[1]]
    assert got == [None, None]
    frame = buf.add(_packet(102, 3000, b"a3", True))[1]          # the frame's last packet
    assert frame is not None and frame.data == b"a1a2a3" and frame.timestamp == 3000
    # the next frame: one packet, marker set: out at once
    frame = buf.add(_packet(103, 6000, b"b", True))[1]
    assert frame is not None and frame.data == b"b"


def test_a_gap_holds_the_frame_until_it_is_whole():
    from streaming.rtp import marker_frame_buffer
    buf = marker_frame_buffer()
    assert buf.add(_packet(10, 3000, b"x1", False))[1] is None
    assert buf.add(_packet(12, 3000, b"x3", True))[1] is None    # 11 is missing
    frame = buf.add(_packet(11, 3000, b"x2", False))[1]          # arrives late: now it is whole
    assert frame is not None and frame.data == b"x1x2x3"
    assert buf.add(_packet(13, 6000, b"y", False))[1] is None    # the next frame waits for its marker


def test_aiortc_default_would_wait_for_the_next_frame():
    """What the buffer is for: aiortc's own video buffer gives nothing at a frame's marker."""
    from aiortc.jitterbuffer import JitterBuffer
    buf = JitterBuffer(capacity=512, is_video=True)
    assert buf.add(_packet(100, 3000, b"a1", False))[1] is None
    assert buf.add(_packet(101, 3000, b"a2", True))[1] is None
    assert buf.add(_packet(102, 6000, b"b", True))[1].data == b"a1a2"
