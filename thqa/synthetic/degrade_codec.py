"""The encoding and decoding work of :func:`thqa.synthetic.degrade.degrade`: the source opened and its streams picked,
the changed stream re-encoded (H.264 or AAC) and the other one copied into an mp4 (see :mod:`thqa.synthetic.degrade`);
the changes themselves are in :mod:`thqa.synthetic.degrade_ops`."""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from thqa.errors import DecodeError, MediaError, NoVideoStreamError
from thqa.synthetic.degrade_ops import TEMPORAL_KINDS, apply_audio_op, make_video_op

__all__ = ["open_input", "run_audio_kind", "run_video_kind"]

logger = logging.getLogger(__name__)

_HQ_VIDEO_OPTIONS = {"crf": "12", "preset": "fast"}
_MP4_VIDEO_COPY = frozenset({"h264", "hevc", "mpeg4", "av1", "vp9"})
_MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})


# --------------------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------------------


def open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise DecodeError(f"{path}: cannot be opened as audio/video ({exc})") from exc
    except OSError as exc:
        raise MediaError(f"{path}: cannot be read ({exc})") from exc


def _pick_streams(container: av.container.InputContainer, path: Path) -> tuple[av.VideoStream, av.AudioStream | None]:
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):
        raise NoVideoStreamError(f"{path}: is a still image ({fmt}), not a video")
    video = None
    for stream in container.streams.video:
        disp = stream.disposition
        if disp & av.stream.Disposition.attached_pic or disp & av.stream.Disposition.still_image:
            continue
        video = stream
        break
    if video is None:
        raise NoVideoStreamError(f"{path}: has no video stream")
    if not video.codec_context.width or not video.codec_context.height:
        raise DecodeError(f"{path}: the video stream has no frame size")
    audio = container.streams.audio[0] if container.streams.audio else None
    return video, audio


def _demux(container: av.container.InputContainer, streams: list, path: Path) -> Iterator[av.Packet]:
    it = container.demux(*streams)
    while True:
        try:
            packet = next(it)
        except StopIteration:
            return
        except av.FFmpegError as exc:
            raise DecodeError(f"{path}: cannot read packets ({exc})") from exc
        yield packet


def _decode(packet: av.Packet, stream, path: Path) -> list:
    """Decode one packet (the demuxer's final empty packet flushes the decoder)."""
    try:
        return list(packet.decode())
    except av.FFmpegError as exc:
        raise DecodeError(f"{path}: cannot decode the {stream.type} stream ({exc})") from exc


def _video_rate(stream: av.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) <= 1000:
            return Fraction(rate).limit_denominator(100000)
    return Fraction(25)


def _video_frame_times(path: Path, stream_index: int) -> np.ndarray:
    """Presentation times (s) of the video packets, sorted: a cheap pre-scan without decoding."""
    container = open_input(path)
    try:
        stream = container.streams[stream_index]
        tb = stream.time_base
        pts = [p.pts for p in _demux(container, [stream], path) if p.pts is not None and p.size > 0]
    finally:
        container.close()
    return np.sort(np.array([float(p * tb) for p in pts], dtype=np.float64)) if tb else np.zeros(0)


def _encoder_options(kind: str, param: float) -> tuple[dict[str, str], int | None]:
    if kind == "compression":
        return {"qp": str(int(param)), "preset": "fast"}, None
    if kind == "bitrate":
        b = int(param)
        return {"preset": "fast", "maxrate": str(b), "bufsize": str(2 * b)}, b
    return dict(_HQ_VIDEO_OPTIONS), None


def _add_h264_stream(out: av.container.OutputContainer, vin: av.VideoStream, width: int, height: int, options: dict[str, str], bit_rate: int | None):
    vout = out.add_stream("libx264", rate=_video_rate(vin))
    vout.width = width
    vout.height = height
    vout.pix_fmt = "yuv420p"
    vout.time_base = vin.time_base
    vout.codec_context.time_base = vin.time_base
    if bit_rate is not None:
        vout.codec_context.bit_rate = bit_rate
    vout.codec_context.options = options
    return vout


class _FrameEncoder:
    """Encode I420 arrays with monotonic source timestamps into an H.264 stream."""

    def __init__(self, out: av.container.OutputContainer, vout, width: int, height: int) -> None:
        self.out, self.vout, self.width, self.height = out, vout, width, height
        self.last_pts: int | None = None
        self.count = 0

    def encode(self, yuv: np.ndarray, pts: int) -> None:
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1
        self.last_pts = pts
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = pts
        frame.time_base = self.vout.codec_context.time_base
        for packet in self.vout.encode(frame):
            self.out.mux(packet)
        self.count += 1

    def flush(self) -> None:
        for packet in self.vout.encode(None):
            self.out.mux(packet)


def _frame_to_i420(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    if frame.format.name != "yuv420p" or frame.width != width or frame.height != height:
        frame = frame.reformat(width=width, height=height, format="yuv420p")
    return frame.to_ndarray()


# --------------------------------------------------------------------------------------------------
# audio
# --------------------------------------------------------------------------------------------------


def _decode_audio(path: Path, stream_index: int) -> tuple[np.ndarray, int, str, float]:
    """All samples of an audio stream as float32 (channels, n), with rate, layout name and start time (s).

    Mono stays mono; every other layout comes back as stereo (mixed down by FFmpeg's resampler).
    """
    container = open_input(path)
    try:
        stream = container.streams[stream_index]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        if rate <= 0:
            raise DecodeError(f"{path}: the audio stream has no sample rate")
        channels = stream.codec_context.layout.nb_channels if stream.codec_context.layout else 1
        # AAC gets a named layout: mono stays mono, anything else (also an unnamed "2 channels") is stereo
        layout = "mono" if channels == 1 else "stereo"
        if channels > 2:
            logger.info("%s: %d audio channels are mixed down to stereo", path, channels)
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks: list[np.ndarray] = []
        start: float | None = None

        def take(frames: list) -> None:
            nonlocal start
            for frame in frames:
                if start is None and frame.pts is not None and frame.time_base is not None:
                    start = float(frame.pts * frame.time_base)
                for rf in resampler.resample(frame):
                    chunks.append(rf.to_ndarray())

        for packet in _demux(container, [stream], path):
            take(_decode(packet, stream, path))
        try:
            for rf in resampler.resample(None):
                chunks.append(rf.to_ndarray())
        except av.FFmpegError:  # pragma: no cover - nothing buffered
            pass
        if not chunks:
            raise DecodeError(f"{path}: the audio stream has no decodable samples")
        audio = np.concatenate(chunks, axis=1).astype(np.float32)
        # the decoder keeps the encoder's padding of the last frame; trim to the stream's own duration
        if stream.duration and stream.time_base:
            n_declared = int(round(float(stream.duration * stream.time_base) * rate))
            if 0 < n_declared < audio.shape[1]:
                audio = audio[:, :n_declared]
        return audio, rate, layout, float(start or 0.0)
    finally:
        container.close()


def _add_aac_stream(out: av.container.OutputContainer, rate: int, layout: str, channels: int):
    aout = out.add_stream("aac", rate=rate)
    aout.layout = layout
    per_channel = 96_000 if rate >= 32_000 else 64_000
    aout.codec_context.bit_rate = min(320_000, per_channel * max(1, channels))
    return aout


class _AudioWriter:
    """Encode a (channels, n) float32 array as AAC in chunks, interleaved with other streams by time."""

    def __init__(self, out: av.container.OutputContainer, aout, audio: np.ndarray, rate: int, layout: str, start_s: float) -> None:
        self.out, self.aout, self.audio, self.rate, self.layout = out, aout, audio, rate, layout
        self.pos = 0
        self.start = max(0, int(round(start_s * rate)))

    def until(self, t_s: float) -> None:
        n = self.audio.shape[1]
        end = n if not math.isfinite(t_s) else min(n, max(self.pos, int(round(t_s * self.rate)) - self.start))
        while self.pos < end:
            stop = min(end, self.pos + 4096)
            chunk = np.ascontiguousarray(self.audio[:, self.pos : stop])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self.layout)
            frame.sample_rate = self.rate
            frame.pts = self.start + self.pos
            for packet in self.aout.encode(frame):
                self.out.mux(packet)
            self.pos = stop

    def finish(self) -> None:
        self.until(math.inf)
        for packet in self.aout.encode(None):
            self.out.mux(packet)


# --------------------------------------------------------------------------------------------------
# the two pipelines
# --------------------------------------------------------------------------------------------------


def _copyable(stream, allowed: frozenset[str]) -> bool:
    return stream.codec_context.name in allowed


def run_video_kind(kind: str, param: float, src: Path, tmp: Path, rng: np.random.Generator) -> tuple[float, bool, bool, int]:
    times = None
    container = open_input(src)
    try:
        vin, ain = _pick_streams(container, src)
        width = vin.codec_context.width - vin.codec_context.width % 2
        height = vin.codec_context.height - vin.codec_context.height % 2
        if width < 2 or height < 2:
            raise DecodeError(f"{src}: frame size {vin.codec_context.width}x{vin.codec_context.height} is too small")
        if kind in TEMPORAL_KINDS:
            times = _video_frame_times(src, vin.index)
        op, used = make_video_op(kind, param, rng=rng, times=times if times is not None else np.zeros(0), width=width, height=height)
        options, bit_rate = _encoder_options(kind, param)
        copy_audio = ain is not None and _copyable(ain, _MP4_AUDIO_COPY)
        audio_writer = None
        if ain is not None and not copy_audio:
            logger.info("%s: audio codec %s is re-encoded as AAC (not copyable into mp4)", src, ain.codec_context.name)
            audio, rate, layout, start = _decode_audio(src, ain.index)
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            vout = _add_h264_stream(out, vin, width, height, options, bit_rate)
            aout = None
            if ain is not None:
                if copy_audio:
                    aout = out.add_stream_from_template(ain)
                else:
                    aout = _add_aac_stream(out, rate, layout, audio.shape[0])
                    audio_writer = _AudioWriter(out, aout, audio, rate, layout, start)
            encoder = _FrameEncoder(out, vout, width, height)
            tb = vin.time_base
            rate_q = _video_rate(vin)
            counter = 0

            def handle(frames: list) -> None:
                nonlocal counter
                for frame in frames:
                    pts = frame.pts
                    if pts is None:
                        pts = int(round(counter / rate_q / tb)) if tb else counter
                    t = float(pts * tb) if tb else counter / float(rate_q)
                    yuv = op(counter, t, _frame_to_i420(frame, width, height))
                    encoder.encode(yuv, int(pts))
                    counter += 1
                    if audio_writer is not None:
                        audio_writer.until(t + 0.5)

            streams = [vin] + ([ain] if copy_audio else [])
            for packet in _demux(container, streams, src):
                if packet.stream is vin:
                    handle(_decode(packet, vin, src))
                elif packet.dts is not None and packet.size > 0:
                    packet.stream = aout
                    out.mux(packet)
            if counter == 0:
                raise DecodeError(f"{src}: the video stream has no decodable frames")
            encoder.flush()
            if audio_writer is not None:
                audio_writer.finish()
        return used, ain is not None, (ain is not None and not copy_audio), counter
    finally:
        container.close()


def run_audio_kind(kind: str, param: float, src: Path, tmp: Path, rng: np.random.Generator) -> tuple[float, bool, int]:
    container = open_input(src)
    try:
        vin, ain = _pick_streams(container, src)
        if ain is None:
            raise MediaError(f"{src}: has no audio stream, so kind {kind!r} (which changes the audio) cannot be applied")
        audio, rate, layout, start = _decode_audio(src, ain.index)
        changed, used = apply_audio_op(kind, param, audio, rate, rng)
        copy_video = _copyable(vin, _MP4_VIDEO_COPY)
        if not copy_video:
            logger.info("%s: video codec %s is re-encoded as H.264 (not copyable into mp4)", src, vin.codec_context.name)
        width = vin.codec_context.width - vin.codec_context.width % 2
        height = vin.codec_context.height - vin.codec_context.height % 2
        n_frames = 0
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            if copy_video:
                vout = out.add_stream_from_template(vin)
                encoder = None
            else:
                vout = _add_h264_stream(out, vin, width, height, dict(_HQ_VIDEO_OPTIONS), None)
                encoder = _FrameEncoder(out, vout, width, height)
            aout = _add_aac_stream(out, rate, layout, changed.shape[0])
            writer = _AudioWriter(out, aout, changed, rate, layout, start)
            tb = vin.time_base
            for packet in _demux(container, [vin], src):
                if packet.dts is not None and tb:
                    writer.until(float(packet.dts * tb) + 0.5)
                if encoder is None:
                    if packet.dts is None or packet.size == 0:
                        continue
                    packet.stream = vout
                    out.mux(packet)
                    n_frames += 1
                else:
                    for frame in _decode(packet, vin, src):
                        encoder.encode(_frame_to_i420(frame, width, height), int(frame.pts or 0))
                        n_frames += 1
            if encoder is not None:
                encoder.flush()
            writer.finish()
        return used, not copy_video, n_frames
    finally:
        container.close()


