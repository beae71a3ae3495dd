"""Receive buffers for aiortc's RTP receivers where aiortc's own cost latency this product does not need.

- The server's microphone (``MIC_PREFETCH``): aiortc holds back 4 audio frames (80 ms) for a smooth
  playout; this sound drives the lips and is never played, so one frame is held (a buffer finds a
  frame's end by the next packet's start).
- Video (``marker_frame_buffer``: the server's webcam, the Python client's received stream): aiortc
  knows a frame is complete only when the next frame's first packet arrives, a frame interval later
  (33 ms at 30 fps); browsers pass a frame on at its last packet, which carries the RTP marker bit.
  So does this buffer: the webcam's frame reaches the face tracker a frame earlier, and what the
  Python client measures is what a browser would see.

aiortc has no option for either: ``use_buffer`` swaps the receiver's buffer before the first packet
(the track event comes with the remote description) and leaves a receiver that is not what it
expects as it is.
"""
from __future__ import annotations

MIC_PREFETCH = 1   # audio frames (20 ms) the microphone's buffer holds back


def use_buffer(pc, track, buffer) -> bool:
    """Give the receiver of ``track`` on ``pc`` this jitter buffer; False where aiortc's receiver has
    no buffer where this expects one (its own stays)."""
    for t in pc.getTransceivers():
        r = t.receiver
        if r.track is track and hasattr(r, "_RTCRtpReceiver__jitter_buffer"):
            r._RTCRtpReceiver__jitter_buffer = buffer
            return True
    return False


def mic_buffer():
    from aiortc.jitterbuffer import JitterBuffer
    return JitterBuffer(capacity=16, prefetch=MIC_PREFETCH)


def marker_frame_buffer():
    """A video buffer that passes each frame on at its marker packet (see the module docstring)."""
    from aiortc.jitterbuffer import JitterBuffer, JitterFrame

    class MarkerFrameBuffer(JitterBuffer):
        def __init__(self):
            super().__init__(capacity=512, is_video=True)

        def add(self, packet):
            pli, frame = super().add(packet)
            if frame is not None or self._origin is None:
                return pli, frame
            # the oldest frame is complete when its packets run without a gap up to one with the marker
            parts, first = [], self._packets[self._origin % self._capacity]
            for count in range(self._capacity):
                p = self._packets[(self._origin + count) % self._capacity]
                if p is None or p.timestamp != first.timestamp:
                    return pli, None
                parts.append(p)
                if p.marker:
                    self.remove(count + 1)
                    return pli, JitterFrame(data=b"".join(x._data for x in parts), timestamp=p.timestamp)
            return pli, None

    return MarkerFrameBuffer()
