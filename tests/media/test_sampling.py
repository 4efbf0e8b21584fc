"""clip_seconds: cyclic sampling for short videos, even spread for long ones, bad arguments refused."""
from __future__ import annotations

import math

import pytest

from thqa.errors import ConfigError, THQAError
from thqa.media.sampling import clip_seconds


@pytest.mark.parametrize(
    "duration, expected",
    [
        (1.0, [0, 0, 0, 0, 0, 0]),
        (2.112, [0, 1, 0, 1, 0, 1]),  # the 29.97 fps 2-second real file
        (3.9, [0, 1, 2, 0, 1, 2]),
        (4.0, [0, 1, 2, 3, 0, 1]),
        (5.99, [0, 1, 2, 3, 4, 0]),  # 5.99 s is 5 whole seconds
        (6.0, [0, 1, 2, 3, 4, 5]),
        (1.9995, [0, 1, 0, 1, 0, 1]),  # container durations a hair under a whole second count as it
    ],
)
def test_cyclic_when_at_most_k_seconds(duration, expected):
    got = clip_seconds(duration)
    assert got == expected
    n = max(1, math.floor(duration + 1e-3))
    if n <= 6:
        assert got == [i % n for i in range(6)]


@pytest.mark.parametrize("n", range(1, 7))
def test_cyclic_rule_is_i_mod_n(n):
    assert clip_seconds(n + 0.5, n_clips=6) == [i % n for i in range(6)]
    assert clip_seconds(float(n), n_clips=9) == [i % n for i in range(9)]


@pytest.mark.parametrize("n", [7, 8, 10, 16, 17, 60, 121, 3600])
def test_spread_when_more_seconds_than_clips(n):
    got = clip_seconds(n + 0.25)
    assert got == [(i * n) // 6 for i in range(6)]
    assert got[0] == 0
    assert got == sorted(got) and len(set(got)) == 6  # distinct, increasing
    assert all(0 <= s < n for s in got)
    # covers the whole video: the last clip starts in its last sixth
    assert got[-1] >= n - n / 6 - 1


def test_docstring_examples():
    assert clip_seconds(16.6, n_clips=6) == [0, 2, 5, 8, 10, 13]
    assert clip_seconds(120.0) == [0, 20, 40, 60, 80, 100]


@pytest.mark.parametrize("duration", [0.0, 0.04, 0.5, 0.999])
def test_shorter_than_a_second_reads_second_zero(duration):
    assert clip_seconds(duration) == [0] * 6
    assert clip_seconds(duration, n_clips=3) == [0, 0, 0]


def test_n_clips_is_respected():
    assert clip_seconds(10.0, n_clips=1) == [0]
    assert clip_seconds(10.0, n_clips=2) == [0, 5]
    assert len(clip_seconds(10.0, n_clips=8)) == 8


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(duration=-1.0),
        dict(duration=float("nan")),
        dict(duration=float("inf")),
        dict(duration="3"),
        dict(duration=None),
        dict(duration=5.0, n_clips=0),
        dict(duration=5.0, n_clips=-2),
        dict(duration=5.0, n_clips=2.5),
        dict(duration=5.0, n_clips=True),
        dict(duration=5.0, n_clips="6"),
    ],
)
def test_invalid_arguments_raise_config_error(kwargs):
    duration = kwargs.pop("duration")
    with pytest.raises(ConfigError) as ei:
        clip_seconds(duration, **kwargs)
    assert isinstance(ei.value, THQAError) and isinstance(ei.value, ValueError)
