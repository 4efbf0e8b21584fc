"""Tests of thqa.data.cache: keys, digests, atomic writes, corruption handling, no pickle."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import thqa.data.cache as cache_mod
import thqa.data.hashing as hashing_mod
from thqa.data.cache import CACHE_FORMAT_VERSION, CacheEntry, FeatureCache, cache_key, file_digest
from thqa.errors import CacheError, ConfigError, MediaFileNotFoundError

REPO = Path(cache_mod.__file__).resolve().parents[2]
SETTINGS = {"fps": 25, "clips": 6, "size": [224, 224], "audio": {"sr": 16000, "n_mels": 128}, "crop": "center"}
WEIGHTS = {"slowfast": "sha256:" + "a" * 64, "swin": "sha256:" + "b" * 64}
DIGEST = "c" * 64
ON_POSIX = os.name == "posix"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "temporal": rng.standard_normal((6, 2304), dtype=np.float32),
        "audio": rng.standard_normal((6, 4, 128, 32), dtype=np.float32),
        "spatial": rng.standard_normal((6, 768), dtype=np.float32),
        "frames": rng.integers(0, 256, (6, 3, 224, 224), dtype=np.uint8),
        "index": np.arange(12, dtype=np.int64).reshape(3, 4),
    }


def _key(i: int) -> str:
    return cache_key(content_digest=f"{i:064x}", settings=SETTINGS, weights=WEIGHTS)


def _meta(i: int = 0) -> dict:
    return {
        "settings": SETTINGS,
        "weights": WEIGHTS,
        "source": f"/data/videos/{i:05d}.mp4",
        "timings": {"decode_s": 0.125, "extract_s": 1.5},
        "thqa_version": "0.1.0",
    }


def _temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.partial"))


# ------------------------------------------------------------------------------------------- round trip


def test_round_trip_arrays_and_meta(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "c")
    arrays = _arrays()
    arrays["flags"] = np.array([True, False, True])
    arrays["scalar"] = np.array(3.5, dtype=np.float64)
    arrays["empty"] = np.zeros((0, 7), dtype=np.float16)
    arrays["strided"] = np.arange(40, dtype=np.int32).reshape(5, 8)[:, ::2]  # non-contiguous view
    arrays["bigendian"] = np.arange(5, dtype=">f4")
    key = _key(1)
    assert key not in cache and cache.get(key) is None

    path = cache.put(key, arrays, _meta(1))

    assert path == cache.path_for(key) == tmp_path / "c" / key[:2] / f"{key}.safetensors"
    assert path.is_file() and key in cache
    entry = cache.get(key)
    assert isinstance(entry, CacheEntry) and entry.path == path
    assert set(entry.arrays) == set(arrays)
    for name, a in arrays.items():
        got = entry.arrays[name]
        assert got.shape == a.shape, name
        assert got.dtype == a.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(got, a, err_msg=name)
    assert entry.arrays["temporal"].dtype == np.float32 and entry.arrays["frames"].dtype == np.uint8
    assert entry.arrays["index"].dtype == np.int64
    assert entry.meta == json.loads(json.dumps(_meta(1)))
    entry.arrays["temporal"][0, 0] = 1.0  # returned arrays are writable copies
    assert list(cache.keys()) == [key] and len(cache) == 1
    assert cache.size_bytes() == path.stat().st_size > 6 * 3 * 224 * 224
    assert cache.stats.writes == 1 and cache.stats.hits == 1 and cache.stats.misses == 1
    assert _temp_files(tmp_path / "c") == []
    # a second put replaces the entry
    cache.put(key, {"x": np.ones(3, np.float32)}, {"v": 2})
    entry2 = cache.get(key)
    assert entry2 is not None and list(entry2.arrays) == ["x"] and entry2.meta == {"v": 2}
    assert cache.remove(key) is True and cache.remove(key) is False and key not in cache


def test_put_rejects_bad_input(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    key = _key(0)
    with pytest.raises(ConfigError, match="'obj'"):
        cache.put(key, {"obj": np.array([object()], dtype=object)}, {})
    with pytest.raises(ConfigError, match="complex128"):
        cache.put(key, {"c": np.zeros(2, np.complex128)}, {})
    with pytest.raises(ConfigError, match="numpy.ndarray"):
        cache.put(key, {"lst": [1.0, 2.0]}, {})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="meta\\['when'\\]"):
        cache.put(key, {"a": np.zeros(2, np.float32)}, {"when": time})
    with pytest.raises(ConfigError, match="invalid cache key"):
        cache.put("../../etc/passwd", {"a": np.zeros(2, np.float32)}, {})
    with pytest.raises(ConfigError, match="invalid cache key"):
        cache.path_for(key.upper())
    assert "not-a-key" not in cache and 123 not in cache
    assert list(cache.keys()) == [] and _temp_files(tmp_path) == []


# ------------------------------------------------------------------------------------------------- keys


def test_cache_key_changes_with_every_input() -> None:
    base = _key(0)
    assert len(base) == 64 and all(ch in "0123456789abcdef" for ch in base)
    variants = [
        cache_key(content_digest="d" * 64, settings=SETTINGS, weights=WEIGHTS),
        cache_key(content_digest=DIGEST, settings=SETTINGS, weights=WEIGHTS),
        cache_key(content_digest=f"{0:064x}", settings={**SETTINGS, "fps": 30}, weights=WEIGHTS),
        cache_key(content_digest=f"{0:064x}", settings={**SETTINGS, "fps": 25.0}, weights=WEIGHTS),
        cache_key(content_digest=f"{0:064x}", settings={**SETTINGS, "fps": "25"}, weights=WEIGHTS),
        cache_key(content_digest=f"{0:064x}", settings={**SETTINGS, "size": [224, 256]}, weights=WEIGHTS),
        cache_key(content_digest=f"{0:064x}", settings={**SETTINGS, "audio": {"sr": 16000, "n_mels": 64}},
                  weights=WEIGHTS),
        cache_key(content_digest=f"{0:064x}", settings={**SETTINGS, "new": None}, weights=WEIGHTS),
        cache_key(content_digest=f"{0:064x}", settings={k: v for k, v in SETTINGS.items() if k != "crop"},
                  weights=WEIGHTS),
        cache_key(content_digest=f"{0:064x}", settings=SETTINGS, weights={**WEIGHTS, "swin": "sha256:" + "e" * 64}),
        cache_key(content_digest=f"{0:064x}", settings=SETTINGS, weights={"slowfast": WEIGHTS["slowfast"]}),
        cache_key(content_digest=f"{0:064x}", settings={"x": 1}, weights={"x": True}),
        cache_key(content_digest=f"{0:064x}", settings={"x": True}, weights={"x": 1}),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)
    # dict order and tuple-vs-list do not matter
    reordered = dict(reversed(list(SETTINGS.items())))
    reordered["audio"] = {"n_mels": 128, "sr": 16000}
    assert cache_key(content_digest=f"{0:064x}", settings=reordered, weights=dict(reversed(WEIGHTS.items()))) == base
    assert cache_key(content_digest=f"{0:064x}", settings={**SETTINGS, "size": (224, 224)}, weights=WEIGHTS) == base
    # format version is part of the key
    doc = {"content": f"{0:064x}", "settings": SETTINGS, "weights": WEIGHTS, "format": CACHE_FORMAT_VERSION}
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    assert base == hashlib.sha256(canon.encode()).hexdigest()


def test_cache_key_is_stable_across_processes() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from thqa.data.cache import cache_key
        s, w, d = json.loads(sys.stdin.read())
        s = dict(reversed(list(s.items())))
        w = dict(reversed(list(w.items())))
        print(cache_key(content_digest=d, settings=s, weights=w))
        """
    )
    env = {**_child_env(), "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps([SETTINGS, WEIGHTS, f"{0:064x}"]), env=env,
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert out.stdout.strip() == _key(0)


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ({"root": Path("/data")}, "settings['root']"),
        ({"fps": np.int64(25)}, "settings['fps']"),
        ({"x": {"y": [1, {2, 3}]}}, "settings['x']['y'][1]"),
        ({"thr": float("nan")}, "settings['thr']"),
        ({"m": {1: "a"}}, "settings['m']"),
        ({"f": object()}, "settings['f']"),
    ],
)
def test_cache_key_rejects_non_json_settings(settings: dict, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        cache_key(content_digest=DIGEST, settings=settings, weights=WEIGHTS)
    assert where in str(info.value)


def test_cache_key_rejects_bad_digest_and_weights() -> None:
    with pytest.raises(ConfigError, match="content_digest"):
        cache_key(content_digest="", settings=SETTINGS, weights=WEIGHTS)
    with pytest.raises(ConfigError, match="weights\\['w'\\]"):
        cache_key(content_digest=DIGEST, settings=SETTINGS, weights={"w": b"bytes"})


# ---------------------------------------------------------------------------------------------- digests


def test_file_digest_matches_hashlib_and_tracks_changes(tmp_path: Path) -> None:
    f = tmp_path / "video.mp4"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 2_500_000, dtype=np.uint8).tobytes())  # > 2 chunks
    f.write_bytes(bytes(data))
    d1 = file_digest(f)
    assert d1 == hashlib.sha256(data).hexdigest()
    assert file_digest(str(f)) == d1
    st = f.stat()
    data[1_234_567] ^= 0x01  # one bit, same size, mtime restored
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    d2 = file_digest(f)
    assert d2 == hashlib.sha256(data).hexdigest() != d1
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_digest(empty) == hashlib.sha256(b"").hexdigest()


def test_file_digest_memoises_unchanged_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashing_mod._clear_digest_memo()
    monkeypatch.setattr(hashing_mod, "_RACY_MARGIN_NS", 0)  # the file was just written; allow memoising it
    calls = []
    real = hashing_mod._hash_open_file
    monkeypatch.setattr(hashing_mod, "_hash_open_file", lambda fh: calls.append(1) or real(fh))
    f = tmp_path / "v.mp4"
    f.write_bytes(b"x" * 1000)
    time.sleep(0.02)  # let the coarse file-system clock tick past the file's ctime
    d = file_digest(f)
    assert file_digest(f) == d and file_digest(tmp_path / "." / "v.mp4") == d
    assert len(calls) == 1
    st = f.stat()
    f.write_bytes(b"y" * 1000)  # same size; give it a distinct mtime in case the clock is coarse
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert file_digest(f) == hashlib.sha256(b"y" * 1000).hexdigest()
    assert len(calls) == 2
    hashing_mod._clear_digest_memo()


def test_file_digest_does_not_memoise_fresh_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashing_mod._clear_digest_memo()
    calls = []
    real = hashing_mod._hash_open_file
    monkeypatch.setattr(hashing_mod, "_hash_open_file", lambda fh: calls.append(1) or real(fh))
    f = tmp_path / "fresh.mp4"
    f.write_bytes(b"abc")
    file_digest(f)
    file_digest(f)
    assert len(calls) == 2  # ctime within the racy margin: hashed again


def test_file_digest_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(MediaFileNotFoundError, match="nope.mp4"):
        file_digest(missing)
    with pytest.raises(FileNotFoundError):  # MediaFileNotFoundError is a FileNotFoundError
        file_digest(tmp_path / "dir" / "x.mp4")
    with pytest.raises(MediaFileNotFoundError, match="directory"):
        file_digest(tmp_path)


# ------------------------------------------------------------------------------------------- atomicity

_KILL_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import thqa.data.cache as c
    root, key, ready = sys.argv[1:4]
    cache = c.FeatureCache(root)
    real_replace = os.replace
    def slow_replace(src, dst):
        # the temp file is complete and fsync'ed; announce it and hang before the rename
        with open(ready + ".tmp", "w") as fh:
            fh.write(str(src))
        real_replace(ready + ".tmp", ready)
        time.sleep(120)
    os.replace = slow_replace
    cache.put(key, {"a": np.ones((64, 64), np.float32)}, {"child": True})
    """
)


@pytest.mark.skipif(not ON_POSIX, reason="SIGKILL")
def test_writer_killed_before_rename_leaves_no_entry(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    ready = tmp_path / "ready"
    key = _key(7)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_CHILD, str(root), key, str(ready)],
        env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"child exited early: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail("child never reached os.replace")
            time.sleep(0.01)
        tmp_file = Path(ready.read_text())
        assert tmp_file.is_file() and tmp_file.stat().st_size > 64 * 64 * 4
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    entry_file = root / key[:2] / f"{key}.safetensors"
    assert not entry_file.exists() and tmp_file.exists()  # the kill left only the temp file

    cache = FeatureCache(root, temp_max_age_s=1e9)  # would already clean it; check the parts separately
    assert not tmp_file.exists()  # constructor removed the dead writer's temp file
    # again, calling clean_temp explicitly
    tmp_file.write_bytes(b"partial")
    assert cache.get(key) is None and key not in cache and len(cache) == 0 and list(cache.keys()) == []
    assert cache.clean_temp() == 1
    assert _temp_files(root) == []
    assert cache.stats.corrupt == 0
    cache.put(key, {"a": np.zeros(3, np.float32)}, {})
    assert cache.get(key) is not None


def test_clean_temp_keeps_live_writers_unless_old(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    sub = tmp_path / "ab"
    sub.mkdir()
    live = sub / cache_mod._temp_name()  # this process: alive
    dead = sub / cache_mod._temp_name(pid=999_999_999)  # no such pid
    foreign = tmp_path / f".tmp-{'0' * 12}-{os.getpid()}-abcd.partial"  # other host: cannot check pid
    other = sub / "notes.partial"  # not a temp name: never touched
    for p in (live, dead, foreign, other):
        p.write_bytes(b"x")
    assert cache.clean_temp() == (1 if ON_POSIX else 0)
    assert live.exists() and foreign.exists() and other.exists()
    assert dead.exists() is not ON_POSIX
    old = time.time() - 7200
    os.utime(foreign, (old, old))
    assert cache.clean_temp() == 1 and not foreign.exists() and live.exists()
    os.utime(live, (old, old))
    FeatureCache(tmp_path)  # constructor cleans temp files older than an hour
    assert not live.exists() and other.exists()
    with pytest.raises(ConfigError):
        cache.clean_temp(older_than_s=-1)


_WRITER_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from thqa.data.cache import FeatureCache
    root, key, wid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cache = FeatureCache(root)
    for i in range(25):
        v = wid * 1000 + i
        cache.put(key, {"v": np.full((256, 256), v, np.int64), "w": np.full(7, wid, np.uint8)},
                  {"v": v, "writer": wid})
    """
)


def test_concurrent_writers_same_key(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = FeatureCache(root)
    key = _key(3)
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER_CHILD, str(root), key, str(w)], env=_child_env(),
                         stderr=subprocess.PIPE)
        for w in (1, 2)
    ]
    try:
        while any(p.poll() is None for p in procs):
            entry = cache.get(key)
            if entry is not None:  # never a partial or mixed entry
                v = entry.meta["v"]
                assert entry.arrays["v"].shape == (256, 256) and (entry.arrays["v"] == v).all()
                assert (entry.arrays["w"] == entry.meta["writer"]).all()
    finally:
        errs = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    entry = cache.get(key)
    assert entry is not None and entry.meta["v"] in (1024, 2024)
    assert cache.stats.corrupt == 0 and len(cache) == 1 and _temp_files(root) == []
    assert not list(root.rglob("*.corrupt"))


# ------------------------------------------------------------------------------------------- corruption


def _data_offset(path: Path) -> int:
    raw = path.read_bytes()
    return 8 + int.from_bytes(raw[:8], "little")


def test_corrupt_entries_are_detected_quarantined_and_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FeatureCache(tmp_path)
    keys = [_key(i) for i in range(5)]
    paths = [cache.put(k, _arrays(i), _meta(i)) for i, k in enumerate(keys)]

    # 0: bit rot in the middle of the tensor data
    raw = bytearray(paths[0].read_bytes())
    start = _data_offset(paths[0])
    raw[(start + len(raw)) // 2] ^= 0xFF
    paths[0].write_bytes(bytes(raw))
    # 1: truncated
    raw = paths[1].read_bytes()
    paths[1].write_bytes(raw[: len(raw) // 2])
    # 2: garbage
    paths[2].write_bytes(b"this is not a safetensors file\n" * 50)
    # 3: hand edit of a dtype in the header (still a valid safetensors file)
    raw = paths[3].read_bytes()
    assert b'"F32"' in raw
    paths[3].write_bytes(raw.replace(b'"F32"', b'"I32"', 1))
    # 4: a valid entry copied to another key's place
    stray = cache.path_for(_key(99))
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(paths[4].read_bytes())
    bad = [(keys[0], paths[0]), (keys[1], paths[1]), (keys[2], paths[2]), (keys[3], paths[3]), (_key(99), stray)]

    with caplog.at_level(logging.WARNING, logger="thqa.data.cache"):
        for k, p in bad:
            caplog.clear()
            assert cache.get(k) is None
            msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(msgs) == 1 and str(p) in msgs[0], msgs
            assert not p.exists() and p.with_name(p.name + ".corrupt").exists()
            assert k not in cache
    assert cache.stats.corrupt == 5
    # not read again: a second get is a plain miss, no new warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="thqa.data.cache"):
        assert all(cache.get(k) is None for k, _ in bad)
    assert caplog.records == [] and cache.stats.corrupt == 5
    assert sorted(cache.keys()) == sorted([keys[4]]) and cache.size_bytes() == paths[4].stat().st_size
    # the good entry is untouched; re-extraction works
    assert cache.get(keys[4]) is not None
    for i, (k, _) in enumerate(bad):
        cache.put(k, _arrays(i), _meta(i))
        entry = cache.get(k)
        assert entry is not None
        np.testing.assert_array_equal(entry.arrays["temporal"], _arrays(i)["temporal"])
    assert cache.stats.corrupt == 5


def test_corruption_reasons_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = FeatureCache(tmp_path)
    k1, k2 = _key(1), _key(2)
    p1 = cache.put(k1, _arrays(1), {})
    p2 = cache.put(k2, {"a": np.zeros(1000, np.float32)}, {})
    raw = bytearray(p1.read_bytes())
    raw[-10] ^= 0x01
    p1.write_bytes(bytes(raw))
    p2.write_bytes(p2.read_bytes()[:-1])
    with caplog.at_level(logging.WARNING, logger="thqa.data.cache"):
        assert cache.get(k1) is None and cache.get(k2) is None
    assert "checksum mismatch" in caplog.records[0].getMessage()
    assert "safetensors cannot parse" in caplog.records[1].getMessage()


# ---------------------------------------------------------------------------------------- bad roots


def test_unwritable_root_raises_cache_error(tmp_path: Path) -> None:
    regular = tmp_path / "file.txt"
    regular.write_text("x")
    for root in (regular / "cache", regular):
        with pytest.raises(CacheError) as info:
            FeatureCache(root)
        assert str(root) in str(info.value)
        assert isinstance(info.value, OSError)


@pytest.mark.skipif(not ON_POSIX or os.geteuid() == 0, reason="needs POSIX permissions as a non-root user")
def test_read_only_root_raises_cache_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(CacheError, match="not writable") as info:
            FeatureCache(ro)
        assert str(ro) in str(info.value)
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------------------------------- no pickle


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling creates the marker file
        return (open, (str(self.marker), "w"))


def test_pickles_in_the_cache_are_never_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    cache = FeatureCache(root)
    good = _key(1)
    cache.put(good, {"a": np.ones(4, np.float32)}, {"ok": True})
    # the payload is live: unpickling it elsewhere runs code
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(probe))).close()
    assert probe.exists()

    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Evil(marker))
    victim = _key(2)
    vpath = cache.path_for(victim)
    vpath.parent.mkdir(exist_ok=True)
    vpath.write_bytes(payload)  # a pickle where an entry should be
    (root / "evil.pkl").write_bytes(payload)
    (vpath.parent / f"{victim}.pkl").write_bytes(payload)
    np.save(vpath.parent / f"{victim}.npy", np.array([_Evil(marker)], dtype=object), allow_pickle=True)
    np.save(root / "evil.npy", np.array([_Evil(marker)], dtype=object), allow_pickle=True)

    def forbidden(*args, **kwargs):
        raise AssertionError("the cache must never unpickle or np.load")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(np, "load", forbidden)

    cache2 = FeatureCache(root)
    assert sorted(cache2.keys()) == sorted([good, victim])
    assert cache2.size_bytes() > 0 and len(cache2) == 2
    assert cache2.get(victim) is None and cache2.stats.corrupt == 1
    entry = cache2.get(good)
    assert entry is not None and entry.meta == {"ok": True}
    cache2.clean_temp(older_than_s=0)
    assert not marker.exists()
    assert (root / "evil.pkl").exists() and (vpath.parent / f"{victim}.npy").exists()  # left alone
    assert list(cache2.keys()) == [good]


def test_probe_failure_raises_cache_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def deny_temp(path, *args, **kwargs):
        if Path(path).name.startswith(".tmp-"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny_temp)
    with pytest.raises(CacheError, match="not writable") as info:
        FeatureCache(tmp_path / "c")
    assert str(tmp_path / "c") in str(info.value)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_put_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    cache = FeatureCache(tmp_path)
    key = _key(5)
    cache.put(key, {"a": np.zeros(3, np.float32)}, {"old": True})

    def failing_fsync(fd: int) -> None:
        raise error

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(CacheError if isinstance(error, OSError) else KeyboardInterrupt) as info:
        cache.put(key, {"a": np.ones(3, np.float32)}, {"old": False})
    if isinstance(error, OSError):
        assert str(cache.path_for(key)) in str(info.value) and "No space" in str(info.value)
    monkeypatch.undo()
    assert _temp_files(tmp_path) == []
    entry = cache.get(key)  # the previous entry is intact
    assert entry is not None and entry.meta == {"old": True} and cache.stats.writes == 1


@pytest.mark.skipif(not ON_POSIX, reason="symbolic links and FIFOs")
def test_put_replaces_a_link_or_fifo_in_the_entrys_place_never_writes_through_it(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "c")
    key = _key(3)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    path = cache.path_for(key)
    path.parent.mkdir(parents=True)
    os.symlink(victim, path)
    cache.put(key, {"a": np.arange(2, dtype=np.float32)}, {"n": 1})
    assert victim.read_text() == "keep" and not path.is_symlink()
    os.unlink(path)
    os.mkfifo(path)
    cache.put(key, {"a": np.arange(2, dtype=np.float32)}, {"n": 2})  # returns: a FIFO is never opened for writing
    entry = cache.get(key)
    assert entry is not None and entry.meta == {"n": 2} and path.is_file() and _temp_files(tmp_path) == []
