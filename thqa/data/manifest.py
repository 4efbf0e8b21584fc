"""Manifests (lists of videos with MOS) and leak-free train/validation splits.

A manifest is a CSV with a path column (``path`` or ``video``, case-insensitive), a MOS column (``mos`` or
``score``) and optional ``group`` and ``split`` columns. THQA-NTIRE's official ``Video,Score`` CSVs work as they
are, with ``video_root`` pointing at the videos and ``group_fn=thqa_ntire_group``.

Bad rows do not stop reading: they are skipped and listed in :attr:`Manifest.skipped` (one logged warning sums
them up). A file that cannot be a manifest at all raises :class:`~thqa.errors.ManifestError`.
"""
from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from thqa.data.hashing import file_digest
from thqa.errors import ConfigError, ManifestError, MediaFileNotFoundError

__all__ = [
    "SPLITS",
    "SKIP_REASONS",
    "MOS_LIMIT",
    "Sample",
    "SkippedRow",
    "Manifest",
    "ThqaNtireName",
    "read_manifest",
    "parse_thqa_ntire_name",
    "thqa_ntire_group",
    "thqa_ntire_source",
    "split_by_group",
    "samples_for_split",
    "shared_groups",
    "shared_content",
]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
_PATH_COLUMNS = ("path", "video")
_MOS_COLUMNS = ("mos", "score")

#: the largest |MOS| a label may have: far beyond any rating scale (1-5, 0-10, 0-100) and far inside float32's range
#: (3.4e38), so a typo such as 1e308 is refused by row instead of training on inf (squared errors stay finite too)
MOS_LIMIT = 1e4

#: Why a manifest row was skipped (:attr:`SkippedRow.reason`).
SKIP_REASONS: tuple[str, ...] = (
    "empty_path",  # the path cell is empty
    "bad_row",  # more cells than the header has columns
    "missing_mos",  # the MOS cell is empty (require_mos=True)
    "bad_mos",  # the MOS is not a number, NaN/inf, or beyond MOS_LIMIT
    "bad_split",  # the split is not train/val/test
    "bad_group",  # group_fn rejected the name
    "duplicate",  # the same file as an earlier row
    "missing_file",  # the file does not exist (check_files=True)
    "bad_path",  # the path cannot name a file (a NUL byte)
)


@dataclass
class Sample:
    """One video of a manifest: resolved path, MOS (None when unlabelled), content group, split, file name."""

    path: Path
    mos: float | None
    group: str
    split: str | None
    name: str


@dataclass(frozen=True)
class SkippedRow:
    """A manifest row that was not used: CSV line number (header = 1), path cell, reason code, details."""

    line: int
    name: str
    reason: str
    detail: str = ""


@dataclass
class Manifest:
    """What :func:`read_manifest` returns: the usable samples and the skipped rows. Iterates over samples."""

    path: Path
    samples: list[Sample] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def skipped_summary(self) -> str:
        """Counts of skipped rows by reason, e.g. ``"2 missing_file, 1 duplicate"`` (empty if none)."""
        counts = Counter(s.reason for s in self.skipped)
        return ", ".join(f"{n} {reason}" for reason, n in counts.most_common())


# -------------------------------------------------------------------------------------------------- manifests
def _find_column(path: Path, lower: list[str], accepted: tuple[str, ...], what: str) -> int | None:
    hits = [i for i, c in enumerate(lower) if c in accepted]
    if len(hits) > 1:
        raise ManifestError(f"{path}: several {what} columns ({', '.join(lower[i] for i in hits)}); keep one")
    return hits[0] if hits else None


def _stem_group(name: str) -> str:
    return Path(name).stem


def read_manifest(
    path: str | os.PathLike[str],
    *,
    video_root: str | os.PathLike[str] | None = None,
    require_mos: bool = True,
    check_files: bool = True,
    group_fn: Callable[[str], str] | None = None,
    content_duplicates: bool = True,
) -> Manifest:
    """Read a manifest CSV (UTF-8, with or without a byte-order mark).

    Args:
        path: the CSV file.
        video_root: folder that relative paths resolve against (default: the manifest's folder).
        require_mos: a MOS column is required and rows without a MOS are skipped; if False, a missing MOS is None.
        check_files: skip rows whose video file does not exist.
        group_fn: maps a file name to its content group when there is no ``group`` cell
            (e.g. :func:`thqa_ntire_group`); default: the file's stem, every file its own group.
        content_duplicates: with ``check_files``, also skip a row whose file has the same content (sha256, as the
            feature cache computes it) as an earlier row's: a symlink or copy of one video under two names must not
            land in both training and validation.

    Returns:
        A :class:`Manifest` with ``samples`` (file order) and ``skipped`` rows (see :data:`SKIP_REASONS`).

    Raises:
        MediaFileNotFoundError: the manifest does not exist.
        ManifestError: empty file, not UTF-8 text, no path column, no MOS column when required, ambiguous columns,
            no usable row.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaFileNotFoundError(f"manifest not found: {path}")
    with readable_csv(path):
        return _read_manifest(path, video_root, require_mos, check_files, group_fn, content_duplicates)


@contextlib.contextmanager
def readable_csv(path: Path) -> Iterator[None]:
    """Reading ``path`` as UTF-8 CSV inside: a file that is not UTF-8 text or not readable CSV raises a
    :class:`ManifestError` naming it (the one rule for manifests, label and prediction files)."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{path}: not UTF-8 text (it holds the byte 0x{exc.object[exc.start]:02x}, {exc.reason}); save it as UTF-8"
        ) from None
    except csv.Error as exc:
        raise ManifestError(f"{path}: not a readable CSV file ({exc})") from None


@dataclass(frozen=True)
class _Columns:
    """Where a manifest's columns are: the header's cells and the index of each known column (None: absent)."""

    header: list[str]
    path: int
    mos: int | None
    group: int | None
    split: int | None


class _Skip(Exception):
    """Internal: a manifest row is skipped for ``reason`` (one of :data:`SKIP_REASONS`) with ``detail``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _read_columns(path: Path, reader, require_mos: bool) -> _Columns:
    """Read the header (the first non-empty row) and find the known columns; warn about the others.

    Raises:
        ManifestError: empty file, repeated or ambiguous columns, no path column, no MOS column when required.
    """
    header: list[str] | None = None
    for row in reader:
        if row and any(c.strip() for c in row):
            header = [c.strip() for c in row]
            break
    if header is None:
        raise ManifestError(f"{path}: the manifest is empty")
    lower = [c.lower() for c in header]
    if len(set(lower)) != len(lower):
        dup = sorted({c for c in lower if lower.count(c) > 1})
        raise ManifestError(f"{path}: repeated column name(s) {dup}")
    path_col = _find_column(path, lower, _PATH_COLUMNS, "path")
    mos_col = _find_column(path, lower, _MOS_COLUMNS, "MOS")
    group_col = _find_column(path, lower, ("group",), "group")
    split_col = _find_column(path, lower, ("split",), "split")
    if path_col is None:
        raise ManifestError(
            f"{path}: no path column (expected one of {'/'.join(_PATH_COLUMNS)}; found {', '.join(header)})"
        )
    if mos_col is None and require_mos:
        raise ManifestError(
            f"{path}: no MOS column (expected one of {'/'.join(_MOS_COLUMNS)}; found {', '.join(header)}); "
            "pass require_mos=False for unlabelled videos"
        )
    known = {c for c in (path_col, mos_col, group_col, split_col) if c is not None}
    unknown = [header[i] for i in range(len(header)) if i not in known]
    if unknown:
        logger.warning("%s: ignoring unknown column(s) %s", path, ", ".join(repr(c) for c in unknown))
    return _Columns(header, path_col, mos_col, group_col, split_col)


def _row_mos(cell: str, require_mos: bool) -> float | None:
    """The MOS of a row's MOS cell (None: empty and not required); :class:`_Skip` when it cannot be one."""
    if not cell:
        if require_mos:
            raise _Skip("missing_mos")
        return None
    try:
        mos = float(cell)
    except ValueError:
        raise _Skip("bad_mos", f"{cell!r} is not a number") from None
    if not math.isfinite(mos):
        raise _Skip("bad_mos", f"{cell!r} is not finite")
    if abs(mos) > MOS_LIMIT:
        raise _Skip("bad_mos", f"{cell!r} is beyond any rating scale (|MOS| <= {MOS_LIMIT:g})")
    return mos


def _row_sample(row: list[str], cols: _Columns, root: Path, require_mos: bool, group_fn: Callable[[str], str]) -> Sample:
    """The sample a data row describes (its file not yet checked); :class:`_Skip` with the reason when it is not one."""
    width = len(cols.header)
    cells = [c.strip() for c in row]
    extra = cells[width:]
    cells += [""] * (width - len(cells))
    name_cell = cells[cols.path]
    if any(extra):
        raise _Skip("bad_row", f"{len(row)} cells, the header has {width}")
    if not name_cell:
        raise _Skip("empty_path")
    mos = _row_mos(cells[cols.mos] if cols.mos is not None else "", require_mos)
    split: str | None = None
    if cols.split is not None and cells[cols.split]:
        split = _SPLIT_ALIASES.get(cells[cols.split].lower())
        if split is None:
            raise _Skip("bad_split", f"{cells[cols.split]!r} is not one of {', '.join(SPLITS)}")
    file_path = Path(name_cell)
    if not file_path.is_absolute():
        file_path = root / file_path
    group = cells[cols.group] if cols.group is not None else ""
    if not group:
        try:
            group = group_fn(file_path.name)
        except ValueError as exc:
            raise _Skip("bad_group", str(exc)) from None
    if "\0" in name_cell:
        raise _Skip("bad_path", "contains a NUL byte")
    return Sample(path=file_path, mos=mos, group=group, split=split, name=file_path.name)


class _Seen:
    """The files (and contents) of the rows read so far, to skip a row naming one again."""

    def __init__(self, check_files: bool, content_duplicates: bool) -> None:
        self.check_files, self.content = check_files, check_files and content_duplicates
        self.paths: dict[str, int] = {}  # normalised path -> line
        self.digests: dict[str, int] = {}  # sha256 -> line

    def add(self, sample: Sample, line: int) -> None:
        """Remember ``sample``'s file; :class:`_Skip` when an earlier row named it (or its content), or it is missing."""
        key = os.path.normpath(os.path.abspath(sample.path))
        if key in self.paths:
            raise _Skip("duplicate", f"same file as line {self.paths[key]}")
        self.paths[key] = line
        if self.check_files and not sample.path.is_file():
            raise _Skip("missing_file", "is not a file" if sample.path.exists() else f"not found: {sample.path}")
        if self.content:
            try:
                digest = file_digest(sample.path)
            except (OSError, ValueError) as exc:  # unreadable (permissions), not a regular file
                raise _Skip("missing_file", f"cannot be read: {exc}") from None
            if digest in self.digests:
                raise _Skip("duplicate", f"same content as line {self.digests[digest]}")
            self.digests[digest] = line


def _read_manifest(path: Path, video_root, require_mos: bool, check_files: bool, group_fn, content_duplicates: bool) -> Manifest:
    root = Path(video_root) if video_root is not None else path.parent
    group_fn = group_fn or _stem_group
    manifest = Manifest(path=path)
    seen = _Seen(check_files, content_duplicates)
    n_rows = 0
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        cols = _read_columns(path, reader, require_mos)
        for row in reader:
            if not row or not any(c.strip() for c in row):
                continue
            n_rows += 1
            try:
                sample = _row_sample(row, cols, root, require_mos, group_fn)
                seen.add(sample, reader.line_num)
            except _Skip as skip:
                name_cell = row[cols.path].strip() if cols.path < len(row) else ""
                manifest.skipped.append(SkippedRow(reader.line_num, name_cell, skip.reason, skip.detail))
                continue
            manifest.samples.append(sample)
    _report(manifest, n_rows)
    return manifest


def _report(manifest: Manifest, n_rows: int) -> None:
    """Log the skipped rows; ManifestError when there were no rows or none is usable."""
    path = manifest.path
    if n_rows == 0:
        raise ManifestError(f"{path}: the manifest has a header but no rows")
    if manifest.skipped:
        first = manifest.skipped[0]
        logger.warning(
            "%s: skipped %d of %d rows (%s); first: line %d %r: %s%s",
            path, len(manifest.skipped), n_rows, manifest.skipped_summary(),
            first.line, first.name, first.reason, f" ({first.detail})" if first.detail else "",
        )
    if not manifest.samples:
        raise ManifestError(f"{path}: no usable row: all {n_rows} rows skipped ({manifest.skipped_summary()})")


# ------------------------------------------------------------------------------------------ THQA-NTIRE names
_VIDEO_EXT = re.compile(r"\.(mp4|mkv|mov|avi|webm)$", re.IGNORECASE)
_AIGC_RE = re.compile(
    r"^(?P<portrait>\d+)_(?P<source>[a-z0-9]+)_common_voice_en_(?P<speech>\d+)_(?P<generator>[a-z0-9]+)$"
)
_THQA_RE = re.compile(r"^(?P<portrait>\d+)_voice_en_(?P<speech>\d+)_(?P<generator>[a-z0-9]+)$")
_SEN_RE = re.compile(
    r"^(?P<portrait>\d+)_SEN_(?P<speech>[a-z0-9_]+?)_"
    r"(?P<distortion>(?:qp_level|qt_level|audio_lead|video_lead|pause_start|pause_middle|stream_level)"
    r"_-?\d+(?:\.\d+)?)$"
)


@dataclass(frozen=True)
class ThqaNtireName:
    """The parts of a THQA-NTIRE file name.

    ``family``: ``"aigc"`` (``<prompt id>_<image model>_common_voice_en_<clip>_<generator>``), ``"thqa"``
    (``<portrait>_voice_en_<clip>_<generator>``, the earlier THQA set) or ``"sen"``
    (``<speaker>_SEN_<sentence>_<distortion>_<level>``, real recordings with added distortions).
    ``source`` is the image model (aigc only), ``generator`` the talking-head generator (not sen),
    ``distortion`` e.g. ``"qp_level_6"`` (sen only).
    """

    family: str
    portrait: str
    speech: str
    source: str | None = None
    generator: str | None = None
    distortion: str | None = None

    @property
    def group(self) -> str:
        """The content group: ``"<family>-<portrait>"`` (see :func:`thqa_ntire_group`)."""
        return f"{self.family}-{self.portrait}"


def parse_thqa_ntire_name(name: str | os.PathLike[str]) -> ThqaNtireName:
    """Split a THQA-NTIRE file name (or a path to one) into its parts.

    Raises:
        ManifestError: the name follows none of the three THQA-NTIRE patterns.
    """
    stem = _VIDEO_EXT.sub("", re.split(r"[\\/]", os.fspath(name).strip())[-1])
    if m := _AIGC_RE.match(stem):
        return ThqaNtireName("aigc", m["portrait"], m["speech"], source=m["source"], generator=m["generator"])
    if m := _THQA_RE.match(stem):
        return ThqaNtireName("thqa", m["portrait"], m["speech"], generator=m["generator"])
    if m := _SEN_RE.match(stem):
        return ThqaNtireName("sen", m["portrait"], m["speech"], distortion=m["distortion"])
    raise ManifestError(f"{os.fspath(name)!r} is not a THQA-NTIRE file name")


def thqa_ntire_group(name: str | os.PathLike[str]) -> str:
    """The content group of a THQA-NTIRE video: its source portrait, so that no face leaks across a split.

    - ``15_dalle3_common_voice_en_36411224_audio2head.mp4`` -> ``"aigc-15"``: the leading number is a portrait
      prompt; every image model's portrait of prompt 15 is driven by the same five speech clips, so all
      image models x clips x generators of one prompt form one group (14 prompts in the data set).
    - ``3_voice_en_34960039_dinet.mp4`` -> ``"thqa-3"``: the earlier THQA set (20 portraits x 5 clips x
      8 generators); its portrait numbers are unrelated to the aigc prompts.
    - ``7889059_SEN_the_small_boy_put_the_worm_on_the_hook_qp_level_6.mp4`` -> ``"sen-7889059"``: the speaker
      of a real recording (10 speakers x the same 5 sentences x 20 distortions). The speaker, not the
      recording, is the group: a recording's 20 distortions and the speaker's other sentences show one face.

    Raises:
        ManifestError (a ValueError): not a THQA-NTIRE name.
    """
    return parse_thqa_ntire_name(name).group


def thqa_ntire_source(name: str | os.PathLike[str]) -> str:
    """What a THQA-NTIRE video was rendered from: its name without the generator (or the distortion).

    The unit for comparing generators paired (:func:`thqa.compare`): every generator renders the same sources.

    - ``15_dalle3_common_voice_en_36411224_audio2head.mp4`` -> ``"aigc-15-dalle3-36411224"`` (prompt, image
      model, speech clip);
    - ``3_voice_en_34960039_dinet.mp4`` -> ``"thqa-3-34960039"`` (portrait, speech clip);
    - ``7889059_SEN_the_small_boy_put_the_worm_on_the_hook_qp_level_6.mp4`` -> ``"sen-7889059-the_small_boy_..."``
      (speaker, sentence: the recording all 20 distortions start from).

    Finer than :func:`thqa_ntire_group` (the portrait), which keeps a face on one side of a split.

    Raises:
        ManifestError (a ValueError): not a THQA-NTIRE name.
    """
    n = parse_thqa_ntire_name(name)
    return "-".join(x for x in (n.family, n.portrait, n.source, n.speech) if x)


# ----------------------------------------------------------------------------------------------------- splits
def _check_split_name(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} or None")


def samples_for_split(samples: Sequence[Sample], split: str | None) -> list[Sample]:
    """The samples whose manifest ``split`` is ``split`` (``"train"``, ``"val"``, ``"test"``; None: no split)."""
    _check_split_name(split)
    return [s for s in samples if s.split == split]


def shared_content(a: Sequence[Sample], b: Sequence[Sample]) -> list[Sample]:
    """The samples of ``b`` whose file has the same content (sha256) as a file of ``a`` (files that cannot be read
    are left out: extraction reports them)."""

    def digest(s: Sample) -> str | None:
        try:
            return file_digest(s.path)
        except (OSError, ValueError):
            return None

    in_a = {d for d in map(digest, a) if d is not None}
    return [s for s in b if (d := digest(s)) is not None and d in in_a]


def shared_groups(a: Sequence[Sample], b: Sequence[Sample]) -> set[str]:
    """Groups that occur in both sample lists (empty for a leak-free split)."""
    return {s.group for s in a} & {s.group for s in b}


def _check_split_args(samples: Sequence[Sample], val_fraction: float, tolerance: float) -> None:
    """ConfigError unless :func:`split_by_group` can split ``samples`` as asked."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if not (tolerance >= 0.0 and math.isfinite(tolerance)):
        raise ConfigError(f"tolerance must be a fraction >= 0, got {tolerance}")
    if not samples:
        raise ConfigError("no samples to split")
    preset = Counter(s.split for s in samples if s.split is not None)
    if preset:
        raise ConfigError(
            f"{sum(preset.values())} sample(s) already carry a split ({dict(preset)}); "
            "use samples_for_split(samples, 'train'/'val'), or samples_for_split(samples, None) to split the rest"
        )
    sizes = Counter(s.group for s in samples)
    if len(sizes) < 2:
        raise ConfigError(
            f"all {len(samples)} samples are in one group ({next(iter(sizes))!r}): a group split would leave "
            "one side empty"
        )


def _pieces(sizes: Counter, rng: np.random.Generator) -> tuple[dict[int, list[str]], list[tuple[int, int]]]:
    """The groups by size (in a seeded order) and the pieces of a bounded knapsack over the group sizes.

    Few groups of a size are pieces of their own; many are binary-split (1, 2, 4, ... groups), so the bitset DP stays
    small even for thousands of singleton groups. A piece is (group size, number of groups)."""
    names = sorted(sizes)
    shuffled = [names[i] for i in rng.permutation(len(names))]
    by_size: dict[int, list[str]] = {}
    for g in shuffled:
        by_size.setdefault(sizes[g], []).append(g)
    pieces: list[tuple[int, int]] = []
    for size, members in by_size.items():
        count = len(members)
        if count <= 8:
            pieces.extend([(size, 1)] * count)
        else:
            k = 1
            while count > 0:
                pieces.append((size, min(k, count)))
                count -= min(k, count)
                k *= 2
    return by_size, [pieces[i] for i in rng.permutation(len(pieces))]


def _val_size(pieces: list[tuple[int, int]], n: int, val_fraction: float, tolerance: float,
              rng: np.random.Generator) -> tuple[list[int], int]:
    """``(reach, size)``: reach[i] has bit t set when t samples are reachable with pieces[:i]; size is the reachable
    validation size closest to the target (ties to the smaller; within ``tolerance`` the seed picks)."""
    reach = [1]
    for size, count in pieces:
        reach.append(reach[-1] | (reach[-1] << (size * count)))
    bits = bin(reach[-1])[:1:-1]  # bits[t] == "1" <=> sum t reachable
    target = val_fraction * n
    sums = [t for t in range(1, min(n, len(bits))) if bits[t] == "1"]
    best = min(sums, key=lambda t: (abs(t - target), t))
    if tolerance > 0.0:
        allowed = [t for t in sums if abs(t - target) <= max(abs(best - target), tolerance * n)]
        best = allowed[int(rng.integers(len(allowed)))]
    return reach, best


def _walk_back(pieces: list[tuple[int, int]], reach: list[int], best: int, rng: np.random.Generator) -> Counter:
    """How many groups of each size go to validation to make ``best`` samples; where both choices reach it, the seed
    decides."""
    taken: Counter[int] = Counter()
    t = best
    for i in range(len(pieces) - 1, -1, -1):
        size, count = pieces[i]
        w = size * count
        can_skip = bool((reach[i] >> t) & 1)
        can_take = t >= w and bool((reach[i] >> (t - w)) & 1)
        if can_take and (not can_skip or rng.random() < 0.5):
            taken[size] += count
            t -= w
    return taken


def split_by_group(
    samples: Sequence[Sample], *, val_fraction: float = 0.2, seed: int = 3407, tolerance: float = 0.0
) -> tuple[list[Sample], list[Sample]]:
    """Split samples into (train, val) so that every group falls wholly on one side.

    Among all group subsets, val gets one whose size is closest to ``val_fraction`` of the samples (exact subset
    sum; ties go to the smaller val). With few large groups the closest size is often reached by one subset only,
    so every seed gives the same val; ``tolerance`` (a fraction of all samples, e.g. 0.005) lets the seed pick
    among all subsets whose size is within that distance of the target instead. The result depends on the
    groups, their sizes and ``seed``, not on the order of ``samples``; both lists keep the input order.

    Raises:
        ConfigError: ``val_fraction`` not in (0, 1), ``tolerance`` < 0, no samples, a single group (a side would
            be empty), or samples that already carry a manifest split (use :func:`samples_for_split` for those).
    """
    _check_split_args(samples, val_fraction, tolerance)
    sizes = Counter(s.group for s in samples)
    n = len(samples)
    rng = np.random.default_rng(seed)
    by_size, pieces = _pieces(sizes, rng)
    reach, best = _val_size(pieces, n, val_fraction, tolerance, rng)
    taken = _walk_back(pieces, reach, best, rng)
    val_groups = {g for size, k in taken.items() for g in by_size[size][:k]}
    train = [s for s in samples if s.group not in val_groups]
    val = [s for s in samples if s.group in val_groups]
    logger.info(
        "group split: %d samples in %d groups -> train %d (%d groups), val %d (%d groups, %.1f%%; asked %.1f%%)",
        n, len(sizes), len(train), len(sizes) - len(val_groups), len(val), len(val_groups),
        100.0 * len(val) / n, 100.0 * val_fraction,
    )
    return train, val
