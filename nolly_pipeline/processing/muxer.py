"""Encode and mux on a worker thread, so encoding overlaps with the work that makes frames.

PyAV releases the GIL inside FFmpeg's encoders, so on two cores an encoder thread runs
beside decode + filtering (colour grade) or the limiter (audio cleanup) as the ffmpeg CLI's
own pipeline does. The queue is bounded so memory stays flat, and it carries copied packets
too: one thread does all the muxing, in the order the producer chose.
"""

from __future__ import annotations

import queue
import threading

import av

from nolly_pipeline.processing.media import ProgressTicker, remux_packet


class EncodeMuxer:
    """Encodes ``stream``'s frames and muxes them, and copied packets, on a worker thread.

    An error on the worker is raised on the producer's next put, or on leaving the block.
    """

    def __init__(self, out: av.container.OutputContainer, stream: av.stream.Stream,
                 ticker: ProgressTicker, depth: int = 8) -> None:
        self.out, self.stream, self.ticker = out, stream, ticker
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"encode-{stream.type}", daemon=True)

    def __enter__(self) -> "EncodeMuxer":
        self.thread.start()
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self.queue.put(None)
        self.thread.join()
        if exc_type is None and self.error is not None:
            raise self.error

    def put_frame(self, frame: av.frame.Frame, work: int = 1) -> None:
        """Encode ``frame``; ``work`` is what the progress ticker advances once it is written."""
        self._put(("frame", frame, work))

    def put_packet(self, packet: av.Packet, stream: av.stream.Stream) -> None:
        """Copy a demuxed packet to ``stream`` (see :func:`remux_packet`)."""
        self._put(("packet", packet, stream))

    def _put(self, item: tuple) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def _run(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                kind, payload, extra = item
                if kind == "packet":
                    remux_packet(self.out, payload, extra)
                else:
                    self.out.mux(self.stream.encode(payload))
                    self.ticker.advance(extra)
            self.out.mux(self.stream.encode(None))
        except BaseException as error:  # noqa: BLE001 - re-raised on the producer's thread
            self.error = error
            while self.queue.get() is not None:  # unblock the producer until it stops
                pass
