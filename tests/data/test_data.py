"""Tests of thqa.data.manifest: manifests, THQA-NTIRE groups, group splits."""
from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from pathlib import Path

import pytest

from thqa.data.manifest import (
    Sample,
    parse_thqa_ntire_name,
    read_manifest,
    samples_for_split,
    shared_groups,
    split_by_group,
    thqa_ntire_group,
)
from thqa.errors import ConfigError, ManifestError, MediaFileNotFoundError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "thqa-ntire"


def _official(split: str) -> Path:
    path = SHARED / f"thqa_ntire_{split}.csv"
    if not path.is_file():
        pytest.skip(f"THQA-NTIRE labels not present under {SHARED}")
    return path


def _samples(groups: dict[str, int]) -> list[Sample]:
    out = []
    for g, n in groups.items():
        for i in range(n):
            name = f"{g}_{i}.mp4"
            out.append(Sample(path=Path(name), mos=1.0, group=g, split=None, name=name))
    return out


# ---------------------------------------------------------------------------------------- THQA-NTIRE names
@pytest.mark.parametrize(
    ("name", "group", "family", "speech", "generator"),
    [
        ("15_dalle3_common_voice_en_36411224_audio2head.mp4", "aigc-15", "aigc", "36411224", "audio2head"),
        ("14_sd15_common_voice_en_35729066_sadtalker.mp4", "aigc-14", "aigc", "35729066", "sadtalker"),
        ("3_opendalle11_common_voice_en_35018501_dinet.mp4", "aigc-3", "aigc", "35018501", "dinet"),
        ("3_voice_en_34960039_ahead.mp4", "thqa-3", "thqa", "34960039", "ahead"),
        ("20_voice_en_34935167_wavlip.mp4", "thqa-20", "thqa", "34935167", "wavlip"),
        ("7889059_SEN_the_small_boy_put_the_worm_on_the_hook_pause_start_2.mp4", "sen-7889059", "sen",
         "the_small_boy_put_the_worm_on_the_hook", None),
        ("002421669_SEN_do_they_make_class_biased_decisions_stream_level_-1.mp4", "sen-002421669", "sen",
         "do_they_make_class_biased_decisions", None),
        ("5372021_SEN_if_dark_came_they_would_lose_her_audio_lead_0.5.mp4", "sen-5372021", "sen",
         "if_dark_came_they_would_lose_her", None),
    ],
)
def test_thqa_ntire_names(name: str, group: str, family: str, speech: str, generator: str | None) -> None:
    assert thqa_ntire_group(name) == group
    assert thqa_ntire_group(f"/videos/val/{name}") == group
    parsed = parse_thqa_ntire_name(name)
    assert (parsed.family, parsed.speech, parsed.generator) == (family, speech, generator)


def test_sen_distortion_parsed() -> None:
    parsed = parse_thqa_ntire_name("5372021_SEN_if_dark_came_they_would_lose_her_audio_lead_0.5.mp4")
    assert parsed.distortion == "audio_lead_0.5"
    assert parse_thqa_ntire_name("3_sd3_common_voice_en_1_eat.mp4").source == "sd3"


@pytest.mark.parametrize("name", ["clip.mp4", "", "15_dalle3_36411224_audio2head.mp4", "x_SEN_hello_blur_3.mp4"])
def test_thqa_ntire_group_rejects_other_names(name: str) -> None:
    with pytest.raises(ManifestError, match="not a THQA-NTIRE file name"):
        thqa_ntire_group(name)


def test_official_splits_groups() -> None:
    manifests = {
        split: read_manifest(_official(split), video_root="/videos", check_files=False, group_fn=thqa_ntire_group)
        for split in ("train", "val", "test")
    }
    assert {k: len(m) for k, m in manifests.items()} == {"train": 8927, "val": 1714, "test": 1606}
    assert all(not m.skipped for m in manifests.values())
    groups = {k: Counter(s.group for s in m) for k, m in manifests.items()}
    assert {k: len(g) for k, g in groups.items()} == {"train": 35, "val": 5, "test": 5}
    families = {k: Counter(g.split("-")[0] for g in gs) for k, gs in groups.items()}
    assert families["train"] == {"aigc": 11, "thqa": 16, "sen": 8}
    assert families["val"] == families["test"] == {"aigc": 2, "thqa": 2, "sen": 1}
    # The official split leaks one portrait prompt: 55 train videos of prompt 14 (one generator, wavlip).
    train, val, test = (manifests[k].samples for k in ("train", "val", "test"))
    assert shared_groups(train, val) == {"aigc-14"}
    assert groups["train"]["aigc-14"] == 55
    assert {parse_thqa_ntire_name(s.name).generator for s in train if s.group == "aigc-14"} == {"wavlip"}
    assert shared_groups(train, test) == set() and shared_groups(val, test) == set()
    assert manifests["val"].samples[0].path == Path("/videos/14_dalle3_common_voice_en_35729059_audio2head.mp4")
    assert manifests["val"].samples[-1].mos == pytest.approx(1.8)  # last row has no newline


def test_official_csv_with_video_root_checks_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    csv_path = _official("val")
    present = ["14_dalle3_common_voice_en_35729059_audio2head.mp4", "3_voice_en_34960039_ahead.mp4"]
    for name in present:
        (tmp_path / name).write_bytes(name.encode())  # distinct content: equal files are duplicates
    with caplog.at_level(logging.WARNING, logger="thqa.data.manifest"):
        manifest = read_manifest(csv_path, video_root=tmp_path, group_fn=thqa_ntire_group)
    assert sorted(s.name for s in manifest) == sorted(present)
    assert all(s.path.parent == tmp_path for s in manifest)
    assert len(manifest.skipped) == 1712 and {s.reason for s in manifest.skipped} == {"missing_file"}
    assert "skipped 1712 of 1714 rows (1712 missing_file)" in caplog.text


def test_official_train_split_by_group() -> None:
    manifest = read_manifest(_official("train"), check_files=False, group_fn=thqa_ntire_group)
    train, val = split_by_group(manifest.samples, val_fraction=0.2, seed=3407)
    assert len(train) + len(val) == 8927
    assert len(val) == 1785  # round(0.2 * 8927): reachable exactly
    assert shared_groups(train, val) == set()


# ---------------------------------------------------------------------------------------------- manifests
def _good_and_bad_manifest(tmp_path: Path) -> Path:
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4", "f.mp4", "g.mp4"):
        (videos / name).write_bytes(name.encode())  # distinct content: equal files are duplicates
    (videos / "folder.mp4").mkdir()
    text = (
        "Path,MOS,comment,Notes\n"  # line 1
        "videos/a.mp4,3.5,ok,\n"  # 2 good
        "videos/missing.mp4,2.0,,\n"  # 3 missing file
        "videos/a.mp4,3.0,,\n"  # 4 duplicate of 2
        "videos/b.mp4,nan,,\n"  # 5 NaN
        "videos/c.mp4,high,,\n"  # 6 non-numeric
        ",2.0,,\n"  # 7 empty path
        "\n"  # 8 blank: ignored
        "videos/d.mp4,,,\n"  # 9 no MOS
        f"{videos / 'e.mp4'},1.25,,\n"  # 10 good, absolute
        "videos/./f.mp4,inf,,\n"  # 11 inf
        "videos/folder.mp4,2,,\n"  # 12 a directory
        "videos/g.mp4,4,,,extra\n"  # 13 too many cells
        '"videos/b.mp4",  2.75 ,,\n'  # 14 good (quoted, spaces)
    )
    path = tmp_path / "manifest.csv"
    path.write_text(text)
    return path


def test_manifest_good_and_bad_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _good_and_bad_manifest(tmp_path)
    with caplog.at_level(logging.WARNING, logger="thqa.data.manifest"):
        manifest = read_manifest(path)
    videos = tmp_path / "videos"
    assert [(s.path, s.mos, s.name, s.group, s.split) for s in manifest] == [
        (videos / "a.mp4", 3.5, "a.mp4", "a", None),
        (videos / "e.mp4", 1.25, "e.mp4", "e", None),
        (videos / "b.mp4", 2.75, "b.mp4", "b", None),
    ]
    assert [(s.line, s.name, s.reason) for s in manifest.skipped] == [
        (3, "videos/missing.mp4", "missing_file"),
        (4, "videos/a.mp4", "duplicate"),
        (5, "videos/b.mp4", "bad_mos"),
        (6, "videos/c.mp4", "bad_mos"),
        (7, "", "empty_path"),
        (9, "videos/d.mp4", "missing_mos"),
        (11, "videos/./f.mp4", "bad_mos"),
        (12, "videos/folder.mp4", "missing_file"),
        (13, "videos/g.mp4", "bad_row"),
    ]
    details = {s.line: s.detail for s in manifest.skipped}
    assert details[4] == "same file as line 2"
    assert "not a number" in details[6] and "not finite" in details[5] and "not finite" in details[11]
    assert details[12] == "is not a file"
    assert "ignoring unknown column(s) 'comment', 'Notes'" in caplog.text
    summary = [r.message for r in caplog.records if "skipped" in r.message]
    assert len(summary) == 1 and "skipped 9 of 12 rows" in summary[0]
    assert manifest.skipped_summary().startswith("3 bad_mos, 2 missing_file")


def test_manifest_without_file_check_and_mos(tmp_path: Path) -> None:
    path = _good_and_bad_manifest(tmp_path)
    manifest = read_manifest(path, check_files=False, require_mos=False)
    reasons = {s.line: s.reason for s in manifest.skipped}
    assert reasons == {4: "duplicate", 5: "bad_mos", 6: "bad_mos", 7: "empty_path", 11: "bad_mos", 13: "bad_row"}
    assert {s.name: s.mos for s in manifest} == {
        "a.mp4": 3.5, "missing.mp4": 2.0, "d.mp4": None, "e.mp4": 1.25, "folder.mp4": 2.0, "b.mp4": 2.75,
    }


def test_manifest_relative_paths_video_root(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "x.mp4").write_bytes(b"x")
    (tmp_path / "lists" / "x.mp4").write_bytes(b"x")
    path = tmp_path / "lists" / "m.csv"
    path.write_text("video,score\nx.mp4,2\n")
    assert read_manifest(path).samples[0].path == tmp_path / "lists" / "x.mp4"
    assert read_manifest(path, video_root=tmp_path / "clips").samples[0].path == tmp_path / "clips" / "x.mp4"


def test_manifest_bom_crlf_group_split_columns(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(
        "\ufeffVIDEO,Score,GROUP,Split\r\n"
        "a.mp4,1,g1,train\r\nb.mp4,2,g1,VAL\r\nc.mp4,3,,test\r\nd.mp4,4,g2,\r\ne.mp4,5,g2,holdout".encode()
    )
    manifest = read_manifest(path, check_files=False)
    assert [(s.name, s.group, s.split) for s in manifest] == [
        ("a.mp4", "g1", "train"), ("b.mp4", "g1", "val"), ("c.mp4", "c", "test"), ("d.mp4", "g2", None),
    ]
    assert [(s.line, s.reason) for s in manifest.skipped] == [(6, "bad_split")]
    assert [s.name for s in samples_for_split(manifest.samples, "train")] == ["a.mp4"]
    assert [s.name for s in samples_for_split(manifest.samples, "val")] == ["b.mp4"]
    assert [s.name for s in samples_for_split(manifest.samples, None)] == ["d.mp4"]
    with pytest.raises(ConfigError, match="unknown split"):
        samples_for_split(manifest.samples, "validation")


def test_manifest_group_fn(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("path,mos\nabc_1.mp4,1\nabc_2.mp4,2\nxyz_1.mp4,3\n")
    manifest = read_manifest(path, check_files=False, group_fn=lambda name: name.split("_")[0])
    assert [s.group for s in manifest] == ["abc", "abc", "xyz"]


def test_manifest_group_fn_rejects_row(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("Video,Score\n3_voice_en_34960039_ahead.mp4,1\nholiday.mp4,2\n")
    manifest = read_manifest(path, check_files=False, group_fn=thqa_ntire_group)
    assert [s.group for s in manifest] == ["thqa-3"]
    assert [(s.line, s.name, s.reason) for s in manifest.skipped] == [(3, "holiday.mp4", "bad_group")]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("path,mos\n", "header but no rows"),
        ("file,mos\na.mp4,1\n", "no path column"),
        ("path,quality\na.mp4,1\n", "no MOS column"),
        ("path,video,mos\na.mp4,a.mp4,1\n", "several path columns"),
        ("path,mos,score\na.mp4,1,1\n", "several MOS columns"),
        ("path,mos,x,X\na.mp4,1,,\n", "repeated column"),
        ("path,mos\na.mp4,nan\nb.mp4,\n", r"no usable row: all 2 rows skipped \(1 bad_mos, 1 missing_mos\)"),
    ],
)
def test_manifest_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ManifestError, match=match) as info:
        read_manifest(path, check_files=False)
    assert "bad.csv" in str(info.value)


def test_manifest_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("path,mos\na.mp4,1\n")
    with pytest.raises(ManifestError, match="no usable row.*1 missing_file"):
        read_manifest(path)
    with pytest.raises(MediaFileNotFoundError):
        read_manifest(tmp_path / "none.csv")


def test_manifest_without_mos_column(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("path\na.mp4\nb.mp4\n")
    manifest = read_manifest(path, check_files=False, require_mos=False)
    assert [(s.name, s.mos) for s in manifest] == [("a.mp4", None), ("b.mp4", None)]


# ------------------------------------------------------------------------------------------------- splits
def test_split_keeps_groups_whole_and_is_closest() -> None:
    rng = random.Random(1)
    sizes = {f"g{i}": rng.randint(1, 30) for i in range(12)}
    samples = _samples(sizes)
    n = len(samples)
    for fraction in (0.1, 0.2, 0.33, 0.5, 0.8):
        train, val = split_by_group(samples, val_fraction=fraction)
        assert shared_groups(train, val) == set()
        assert len(train) + len(val) == n and train and val
        assert Counter(s.group for s in val) == {g: sizes[g] for g in {s.group for s in val}}
        reachable = {sum(c) for r in range(1, len(sizes)) for c in itertools.combinations(sizes.values(), r)}
        best = min(abs(t - fraction * n) for t in reachable if 0 < t < n)
        assert abs(len(val) - fraction * n) == pytest.approx(best)


def test_split_is_deterministic_and_order_free() -> None:
    samples = _samples({f"g{i}": 5 for i in range(40)})
    train1, val1 = split_by_group(samples, seed=3407)
    train2, val2 = split_by_group(list(samples), seed=3407)
    shuffled = samples[:]
    random.Random(0).shuffle(shuffled)
    _, val3 = split_by_group(shuffled, seed=3407)
    assert [s.name for s in val1] == [s.name for s in val2]
    assert {s.name for s in val3} == {s.name for s in val1}
    assert len(val1) == 40  # 20 % of 200
    other = {frozenset(s.group for s in split_by_group(samples, seed=seed)[1]) for seed in range(5)}
    assert len(other) > 1  # the seed matters
    names = [s.name for s in samples]
    assert [s.name for s in train1] == [n for n in names if n in {s.name for s in train1}]  # input order kept


def test_split_tolerance_lets_seed_choose() -> None:
    samples = _samples({"a": 10, "b": 11, "c": 12, "d": 13, "e": 54})
    exact = {frozenset(s.group for s in split_by_group(samples, seed=s)[1]) for s in range(8)}
    assert exact == {frozenset({"a", "b"})}  # 21 of 100: the only subset closest to 20
    loose = {frozenset(s.group for s in split_by_group(samples, seed=s, tolerance=0.05)[1]) for s in range(20)}
    assert len(loose) > 1
    for val in loose:
        assert abs(sum({"a": 10, "b": 11, "c": 12, "d": 13, "e": 54}[g] for g in val) - 20) <= 5


def test_split_singleton_groups_large() -> None:
    samples = _samples({f"s{i}": 1 for i in range(5000)})
    train, val = split_by_group(samples, val_fraction=0.123)
    assert len(val) == 615 and len(train) == 4385


def test_split_two_groups_far_from_fraction() -> None:
    train, val = split_by_group(_samples({"big": 99, "small": 1}), val_fraction=0.5)
    assert {s.group for s in val} == {"small"} and len(train) == 99


@pytest.mark.parametrize(
    ("samples", "kwargs", "match"),
    [
        (_samples({"only": 10}), {}, "one group"),
        ([], {}, "no samples"),
        (_samples({"a": 1, "b": 1}), {"val_fraction": 0.0}, "val_fraction"),
        (_samples({"a": 1, "b": 1}), {"val_fraction": 1.0}, "val_fraction"),
        (_samples({"a": 1, "b": 1}), {"tolerance": -0.1}, "tolerance"),
    ],
)
def test_split_errors(samples: list[Sample], kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        split_by_group(samples, **kwargs)


def test_split_refuses_samples_with_manifest_split() -> None:
    samples = _samples({"a": 2, "b": 2})
    samples[0].split = "train"
    with pytest.raises(ConfigError, match="already carry a split"):
        split_by_group(samples)
    train, val = split_by_group(samples_for_split(samples, None))
    assert len(train) + len(val) == 3
