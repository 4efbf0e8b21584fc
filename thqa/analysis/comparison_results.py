"""The results of :func:`thqa.analysis.comparison.compare`: one dataclass per level (group, pair, system, the whole
comparison) and the plain-text table of ``thqa compare``. Re-exported by :mod:`thqa.analysis.comparison`."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

P_TEST = (
    "two-sided tests: sign flips of the per-source differences for paired pairs; other pairs without a source key, a "
    "bootstrap-t test of equal means (Welch's t against resamples of each group's videos, each centred on its group's "
    "mean); with a source key, the difference of least-squares means over its bootstrap standard error against "
    "Student's t (fewer sources - 1 degrees of freedom); Holm-corrected over all pairs"
)


# ----------------------------------------------------------------------------------------------------- results
@dataclass
class GroupStats:
    """One group: ``n`` videos (from ``n_sources`` sources with a source key), mean score and its CI, rank (1 = best).

    With a source key ``mean`` is the group's least-squares mean in the two-way layout group + source (its effect
    plus the mean effect of the sources it shares a layout with): the figure ranks and pair differences use, so
    they agree; ``raw_mean`` is the plain mean of its videos. Without a source key both are the plain mean."""

    group: str
    n: int
    mean: float
    ci: list[float] | None
    rank: int
    n_sources: int | None = None
    label_mean: float | None = None
    label_ci: list[float] | None = None
    label_rank: int | None = None
    note: str | None = None  #: why there is no CI, when there is none
    raw_mean: float | None = None  #: the plain mean of the group's videos (``mean`` takes the sources out)
    raw_label_mean: float | None = None


@dataclass
class PairStats:
    """Group ``a`` against group ``b``: ``diff`` = a - b of the groups' figures (``GroupStats.mean``), its CI, the
    test's p-value, Holm-adjusted p, verdict. A paired pair is tested on its shared sources (``n_paired``; ``share``
    says what part of each group's videos that is)."""

    a: str
    b: str
    diff: float
    ci: list[float] | None
    p: float | None
    p_holm: float | None
    significant: bool
    paired: bool
    n_paired: int
    label_diff: float | None = None
    label_ci: list[float] | None = None
    label_p: float | None = None
    label_p_holm: float | None = None
    label_significant: bool | None = None
    note: str | None = None
    #: share of each group's videos the test used: for a paired pair those of the shared sources
    share: list[float] | None = None
    paired_diff: float | None = None  #: a paired pair: mean of the per-source differences over the shared sources


@dataclass
class SystemStats:
    """System-level agreement between the groups' mean predictions and mean labels (PLCC without a fitted curve).

    ``srcc``, ``krcc``, ``plcc`` are the correlations of the groups' figures as observed; the intervals are for the
    population correlations (the groups' figures without noise), which the observed ones underestimate when the
    groups are close (see :mod:`thqa.analysis.comparison_system`)."""

    n_groups: int
    srcc: float
    srcc_ci: list[float] | None
    krcc: float
    krcc_ci: list[float] | None
    plcc: float
    plcc_ci: list[float] | None
    #: 1 - noise / observed variance between the groups' figures (the smaller of predictions and labels): below
    #: RELIABLE the point correlations are attenuated by the figures' noise (a note says so)
    reliability: float | None = None
    #: the population PLCC (infinitely many sources per group) estimated with the noise taken out (median-unbiased)
    plcc_disattenuated: float | None = None


@dataclass
class Comparison:
    """What :func:`compare` found; :meth:`to_dict` gives the JSON document of ``thqa compare --json``."""

    groups: list[GroupStats]
    pairs: list[PairStats]
    system: SystemStats | None
    n: int  #: videos compared
    n_boot: int
    ci_level: float
    seed: int
    resampling: str  #: "video", "source" or "cluster" (two-stage: clusters, then sources within them)
    n_perm: int = 0  #: random permutations per test (tests with fewer possible permutations use all: exact)
    p_test: str = P_TEST
    matching: dict | None = None  #: predictions against labels: counts and examples of unmatched names
    left_out: dict = field(default_factory=dict)  #: {"no_group"|"no_source": {"n", "examples"}}
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def group(self, name: str) -> GroupStats:
        for g in self.groups:
            if g.group == name:
                return g
        raise KeyError(name)

    def pair(self, a: str, b: str) -> PairStats:
        """The pair of ``a`` and ``b`` in either order (``diff`` is then ``a - b`` as asked)."""
        for p in self.pairs:
            if (p.a, p.b) == (a, b):
                return p
            if (p.a, p.b) == (b, a):
                return _flipped(p)
        raise KeyError((a, b))

    def table(self) -> str:
        """A plain-text report: groups, system-level agreement, pairs."""
        return format_table(self)


def _neg_ci(ci: list[float] | None) -> list[float] | None:
    return None if ci is None else [-ci[1], -ci[0]]


def _flipped(p: PairStats) -> PairStats:
    return PairStats(
        p.b, p.a, -p.diff, _neg_ci(p.ci), p.p, p.p_holm, p.significant, p.paired, p.n_paired,
        None if p.label_diff is None else -p.label_diff, _neg_ci(p.label_ci), p.label_p, p.label_p_holm,
        p.label_significant, p.note, None if p.share is None else p.share[::-1], None if p.paired_diff is None else -p.paired_diff,
    )


# ------------------------------------------------------------------------------------------------- output
def fmt_ci(ci: list[float] | None, digits: int = 3) -> str:
    return "-" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def format_table(res: Comparison) -> str:
    """The plain-text report of ``thqa compare``."""
    pct = f"{100 * res.ci_level:g}%"
    labelled = res.system is not None or any(g.label_mean is not None for g in res.groups)
    width = max([5] + [len(g.group) for g in res.groups])
    adjusted = res.resampling in ("source", "cluster")
    head = f"{'rank':>4}  {'group':<{width}}  {'n':>5}  {'mean':>7}  {pct + ' CI':<18}" + (f"  {'raw':>7}" if adjusted else "")
    if labelled:
        head += f"  {'label':>7}  {pct + ' CI':<18}  {'label rank':>10}"
    lines = [
        f"{res.n} videos in {len(res.groups)} groups; bootstrap by {res.resampling} ({res.n_boot} resamples, "
        f"{res.n_perm} permutations per test, seed {res.seed})",
        "",
        head,
    ]
    for g in res.groups:
        row = f"{g.rank:>4}  {g.group:<{width}}  {g.n:>5}  {g.mean:>7.3f}  {fmt_ci(g.ci):<18}" + (f"  {g.raw_mean:>7.3f}" if adjusted else "")
        if labelled:
            row += f"  {g.label_mean:>7.3f}  {fmt_ci(g.label_ci):<18}  {g.label_rank:>10}"
        if g.note:
            row += f"  ({g.note})"
        lines.append(row)
    if res.system is not None:
        s = res.system
        lines += [
            "",
            f"system level ({s.n_groups} groups' means, predictions against labels): "
            f"SRCC {s.srcc:.4f} {fmt_ci(s.srcc_ci, 4)}, KRCC {s.krcc:.4f} {fmt_ci(s.krcc_ci, 4)}, "
            f"PLCC {s.plcc:.4f} {fmt_ci(s.plcc_ci, 4)}"
            + ("" if s.plcc_disattenuated is None else f" (noise taken out: {s.plcc_disattenuated:.4f}; intervals for the population values)"),
        ]
    n_sig = sum(p.significant for p in res.pairs)
    n_paired = sum(p.paired for p in res.pairs)
    alpha = f"{1 - res.ci_level:.2g}"
    lines += ["", f"pairs: {n_sig} of {len(res.pairs)} significant (Holm, alpha {alpha}); {n_paired} paired by source"]
    if labelled:
        n_lsig = sum(bool(p.label_significant) for p in res.pairs)
        lines[-1] += f"; the labels separate {n_lsig}"
    wa = max([1] + [len(p.a) for p in res.pairs])
    wb = max([1] + [len(p.b) for p in res.pairs])
    head = f"{'a':<{wa}}  {'b':<{wb}}  {'a - b':>7}  {pct + ' CI':<18}  {'p':>8}  {'Holm p':>8}  sig  paired  {'used a/b':>9}"
    if labelled:
        head += f"  {'label a - b':>11}  {'sig':>3}"
    lines.append(head)
    for p in res.pairs:
        row = (
            f"{p.a:<{wa}}  {p.b:<{wb}}  {p.diff:>7.3f}  {fmt_ci(p.ci):<18}  {fmt_p(p.p):>8}  {fmt_p(p.p_holm):>8}  "
            f"{'yes' if p.significant else 'no ':<3}  {str(p.n_paired) if p.paired else '-':>6}  "
            f"{'-' if p.share is None else f'{p.share[0]:.0%}/{p.share[1]:.0%}':>9}"
        )
        if labelled:
            row += f"  {p.label_diff:>11.3f}  {'yes' if p.label_significant else 'no':>3}"
        if p.note:
            row += f"  ({p.note})"
        lines.append(row)
    lines += ["", f"p: {res.p_test}."]
    lines += [f"note: {n}" for n in res.notes]
    return "\n".join(line.rstrip() for line in lines) + "\n"

