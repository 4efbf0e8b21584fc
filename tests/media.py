"""Test media written with PyAV: videos whose frames carry their own index, tones at known times, odd files.

Every frame made by :func:`index_frame` shows its frame index as a 4 x 4 grid of black/white blocks (16 bits, most
significant bit top-left), so a test can read back which frame a clip got with :func:`read_index`, at any size the
frame was resized to (the grid covers the whole picture).
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

GRID = 4  #: the index code is GRID x GRID blocks
BITS = GRID * GRID

#: shared/media beside the checkout (absent in a fresh clone: tests skip)
MEDIA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "media"

_AUDIO_CODEC = {".mp4": "aac", ".mov": "aac", ".m4a": "aac", ".mkv": "aac", ".webm": "libopus", ".avi": "pcm_s16le"}


def index_frame(i: int, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB whose 4 x 4 blocks spell ``i`` in binary (white = 1)."""
    if not 0 <= i < 2**BITS:
        raise ValueError(f"frame index {i} does not fit {BITS} bits")
    img = np.zeros((height, width, 3), dtype=np.uint8)
    ys = np.linspace(0, height, GRID + 1).round().astype(int)
    xs = np.linspace(0, width, GRID + 1).round().astype(int)
    for b in range(BITS):
        if (i >> (BITS - 1 - b)) & 1:
            r, c = divmod(b, GRID)
            img[ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = 255
    return img


def read_index(img: np.ndarray) -> int:
    """The frame index spelled by :func:`index_frame`, read from the centre of each block of ``img`` (H, W, 3)."""
    h, w = img.shape[:2]
    gray = np.asarray(img, dtype=np.float32).mean(axis=2)
    ys = np.linspace(0, h, GRID + 1)
    xs = np.linspace(0, w, GRID + 1)
    value = 0
    for b in range(BITS):
        r, c = divmod(b, GRID)
        y0, y1 = ys[r], ys[r + 1]
        x0, x1 = xs[c], xs[c + 1]
        # the middle half of the block: away from the edges that scaling and compression blur
        cy0, cy1 = int(y0 + (y1 - y0) / 4), int(math.ceil(y1 - (y1 - y0) / 4))
        cx0, cx1 = int(x0 + (x1 - x0) / 4), int(math.ceil(x1 - (x1 - x0) / 4))
        bit = gray[cy0:cy1, cx0:cx1].mean() > 127.5
        value = (value << 1) | int(bit)
    return value


def tone(freq: float, seconds: float, *, sample_rate: int = 16000, amplitude: float = 0.5, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """(n,) float32: silence except a sine of ``freq`` Hz from ``start`` to ``end`` seconds."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    y = amplitude * np.sin(2 * np.pi * freq * t)
    mask = (t >= start) & (t < (seconds if end is None else end))
    return (y * mask).astype(np.float32)


def write_video(
    path: str | Path,
    *,
    seconds: float,
    fps: float = 25,
    size: tuple[int, int] = (64, 64),
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    codec: str = "h264",
    frame_fn: Callable[[int, float], np.ndarray] | None = None,
    timestamps: Sequence[float] | None = None,
    rotation: int = 0,
    audio_codec: str | None = None,
    gop: int | None = None,
    faststart: bool = False,
    pix_fmt: str | None = None,
    x264_preset: str = "ultrafast",
    x264_params: str | None = None,
    audio_chunk: int = 1024,
    audio_ahead: float = 0.0,
) -> Path:
    """Write a test video with PyAV and return its path.

    Args:
        seconds: duration; ``round(seconds * fps)`` frames (at least 1) unless ``timestamps`` is given.
        fps: frame rate (a float like 29.97 becomes 30000/1001).
        size: (width, height) of the stored frames; H.264 / yuv420p needs even numbers.
        audio: None for a file without an audio stream, else (n,) mono or (channels, n) float32 in [-1, 1].
        codec: "h264" (libx264, yuv420p), "mpeg4", "vp9" (libvpx-vp9), ...
        frame_fn: ``frame_fn(index, time_s) -> (H, W, 3) uint8``; default :func:`index_frame`.
        timestamps: explicit frame times in seconds (variable frame rate); the stream's time base is then 1/1000.
        rotation: display rotation in degrees counter-clockwise (display-matrix side data), 0 for none.
        audio_codec: default from the container (aac for mp4/mkv/mov, libopus for webm, mp3 for avi).
        gop: key-frame interval in frames (default: the encoder's).
        faststart: mp4/mov: put the index (moov) before the media data, as streaming files do.
        pix_fmt: default yuv420p (yuvj420p for mjpeg); e.g. yuv444p allows odd sizes with H.264.
        x264_preset: "ultrafast" (no B-frames) by default; "medium" gives B-frames (reordered timestamps).
        x264_params: extra libx264 parameters, e.g. "open-gop=1:bframes=3".
        audio_chunk: samples per audio frame handed to the encoder (for PCM codecs, per packet: 16000 makes 1 s
            chunks of sound between the video packets, 64 tiny ones).
        audio_ahead: hand the sound to the muxer this many seconds ahead of the video (large interleaving).
    """
    import av

    path = Path(path)
    width, height = size
    rate = Fraction(fps).limit_denominator(1001)
    if timestamps is None:
        n = max(1, int(round(seconds * float(rate))))
        times = [i / float(rate) for i in range(n)]
    else:
        times = [float(t) for t in timestamps]
    make = frame_fn or (lambda i, t: index_frame(i, width, height))

    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height = width, height
        vs.pix_fmt = pix_fmt or {"mjpeg": "yuvj420p"}.get(codec, "yuv420p")
        if codec in ("h264", "libx264"):
            vs.options = {"preset": x264_preset, "crf": "18", **({"x264-params": x264_params} if x264_params else {})}
        if gop:
            vs.codec_context.gop_size = gop
        if timestamps is not None:
            vs.time_base = Fraction(1, 1000)
            vs.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            vs.set_display_rotation(rotation)

        as_ = None
        chunks: list[np.ndarray] = []
        if audio is not None:
            a = np.asarray(audio, dtype=np.float32)
            if a.ndim == 1:
                a = a[None, :]
            channels = a.shape[0]
            layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
            acodec = audio_codec or _AUDIO_CODEC.get(path.suffix.lower(), "aac")
            as_ = out.add_stream(acodec, rate=sample_rate, layout=layout)
            as_.codec_context.format = "s16" if acodec.startswith("pcm_s16") else "fltp"
            # audio_chunk-sample chunks, handed to the muxer interleaved with the video
            step = audio_chunk
            chunks = [np.ascontiguousarray(a[:, i : i + step]) for i in range(0, a.shape[1], step)]

        a_next = 0  # next audio chunk
        a_pts = 0

        def feed_audio(until: float | None) -> None:
            nonlocal a_next, a_pts
            while as_ is not None and a_next < len(chunks):
                if until is not None and a_pts / sample_rate > until:
                    return
                c = chunks[a_next]
                lay = as_.codec_context.layout.name
                if as_.codec_context.format.name == "s16":  # interleaved int16, (1, n * channels)
                    data = (np.clip(c, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1).copy()
                    frame = av.AudioFrame.from_ndarray(data, format="s16", layout=lay)
                else:
                    frame = av.AudioFrame.from_ndarray(c, format="fltp", layout=lay)
                frame.sample_rate = sample_rate
                frame.pts = a_pts
                frame.time_base = Fraction(1, sample_rate)
                for packet in as_.encode(frame):
                    out.mux(packet)
                a_pts += c.shape[1]
                a_next += 1

        for i, t in enumerate(times):
            feed_audio(t + audio_ahead)
            img = make(i, t)
            if img.shape != (height, width, 3) or img.dtype != np.uint8:
                raise ValueError(f"frame_fn returned {img.shape} {img.dtype}, expected {(height, width, 3)} uint8")
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if timestamps is not None:
                frame.pts = int(round(t * 1000))
                frame.time_base = Fraction(1, 1000)
            else:
                frame.pts = i
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        feed_audio(None)
        if as_ is not None:
            for packet in as_.encode(None):
                out.mux(packet)
    return path


def write_audio_only(path: str | Path, audio: np.ndarray, *, sample_rate: int = 16000, codec: str = "aac") -> Path:
    """An audio-only file (e.g. .m4a with AAC, .wav with pcm_s16le)."""
    import av

    path = Path(path)
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    layout = {1: "mono", 2: "stereo"}[a.shape[0]]
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=sample_rate, layout=layout)
        pcm = codec.startswith("pcm_")
        pts = 0
        for i in range(0, a.shape[1], 1024):
            c = np.ascontiguousarray(a[:, i : i + 1024])
            if pcm:
                frame = av.AudioFrame.from_ndarray((np.clip(c, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1).copy(), format="s16", layout=layout)
            else:
                frame = av.AudioFrame.from_ndarray(c, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = pts
            pts += c.shape[1]
            for packet in s.encode(frame):
                out.mux(packet)
        for packet in s.encode(None):
            out.mux(packet)
    return path


def write_image(path: str | Path, *, size: tuple[int, int] = (64, 48), fmt: str | None = None) -> Path:
    """A still image (PNG or JPEG from the suffix, or ``fmt``) written with PyAV's image encoders."""
    import av

    path = Path(path)
    width, height = size
    fmt = fmt or {".png": "png", ".jpg": "mjpeg", ".jpeg": "mjpeg"}[path.suffix.lower()]
    img = index_frame(1234, width, height)
    cc = av.CodecContext.create(fmt, "w")
    cc.width, cc.height = width, height
    cc.pix_fmt = "rgb24" if fmt == "png" else "yuvj420p"
    cc.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    if fmt != "png":
        frame = frame.reformat(format="yuvj420p")
    data = b"".join(bytes(p) for p in cc.encode(frame)) + b"".join(bytes(p) for p in cc.encode(None))
    path.write_bytes(data)
    return path


def truncate(src: str | Path, dst: str | Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst``."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def remux_with_offset(src: str | Path, dst: str | Path, offset: float, *, how: str = "input") -> Path:
    """Copy ``src``'s packets into ``dst`` with every timestamp moved by ``offset`` seconds, negative ones kept
    (``-avoid_negative_ts disabled``), as the FFmpeg command line does without re-encoding:

    * ``how="input"``: ``ffmpeg -itsoffset OFFSET -i src -c copy -avoid_negative_ts disabled dst`` (the packets are
      shifted before the muxer sees them);
    * ``how="output"``: ``ffmpeg -i src -c copy -output_ts_offset OFFSET -avoid_negative_ts disabled dst`` (the
      muxer's own ``output_ts_offset`` option shifts them).
    """
    import av

    dst = Path(dst)
    options = {"avoid_negative_ts": "disabled"}
    if how == "output":
        options["output_ts_offset"] = f"{offset:g}"
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=options) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None and packet.pts is None:  # the demuxer's flush packets
                continue
            if how == "input":
                d = int(round(offset / packet.time_base))
                packet.pts = None if packet.pts is None else packet.pts + d
                packet.dts = None if packet.dts is None else packet.dts + d
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst
