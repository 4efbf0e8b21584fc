"""The backbones' identity without building them, and without torch: how their weights are asked for
(:class:`WeightsOptions`), what a built backbone reports (:class:`BackboneInfo`), and - where the digest is remembered
(:mod:`thqa.features.digests`) - that report before any build (:func:`known_identity`, :func:`known_infos`).

A run whose every feature is cached needs only the cache keys; this module gives them without importing torch, timm
or pytorchvideo (``tests/features/test_startup_cached.py``). :mod:`thqa.features.weights` builds the backbones, and
re-exports the names defined here.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from thqa.errors import WeightsNotFoundError
from thqa.features.digests import DigestCache, file_key, random_init_key
from thqa.features.registry import SLOWFAST_R50, SWIN_T, spec, specs
from thqa.features.weight_caches import cached_weights
from thqa.utils.hints import option

__all__ = ["WeightsOptions", "BackboneInfo", "known_identity", "known_infos", "DEFAULT_SEED", "ENV_OFFLINE"]

DEFAULT_SEED = 3407
ENV_OFFLINE = "THQA_OFFLINE"


def _how(backbone: str) -> str:
    """How to provide a backbone's weights (the end of every "not found" message), named as the user gives them:
    keywords from Python (``swin_weights=FILE``, ``random_init=True``), options from the CLI (:mod:`thqa.utils.hints`)."""
    s = spec(backbone)
    return f"pass {option(s.keyword, 'FILE')} or set ${s.env}, or use {option('random_init=True')} for untrained weights"


@dataclass(frozen=True)
class WeightsOptions:
    """How to obtain the backbones' weights. Paths default to the environment variables above."""

    random_init: bool = False
    seed: int = DEFAULT_SEED
    swin_weights: str | None = None
    slowfast_weights: str | None = None
    offline: bool | None = None  #: None: from $THQA_OFFLINE / $HF_HUB_OFFLINE
    #: local weight files of further backbones: (keyword, path) pairs (the registry's ``keyword``, e.g. "x_weights")
    files: tuple[tuple[str, str], ...] = ()

    def named_file(self, backbone: str) -> str | None:
        """The weights file named for ``backbone`` (a registry name): its keyword here, else its environment variable."""
        s = spec(backbone)
        given = getattr(self, s.keyword) if s.keyword in self.__dataclass_fields__ else dict(self.files).get(s.keyword)
        return given or os.environ.get(s.env) or None

    def resolved_swin(self) -> str | None:
        return self.named_file(SWIN_T.name)

    def resolved_slowfast(self) -> str | None:
        return self.named_file(SLOWFAST_R50.name)

    def is_offline(self) -> bool:
        if self.offline is not None:
            return self.offline
        return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in (ENV_OFFLINE, "HF_HUB_OFFLINE"))


@dataclass(frozen=True)
class BackboneInfo:
    """Where a backbone's weights came from, and their identity."""

    name: str  #: the registry name: "swin_t", "slowfast_r50", ...
    source: str  #: one of thqa.features.registry.WEIGHT_SOURCES
    sha256: str  #: digest of the parameters and buffers (see :func:`thqa.features.weights.state_digest`)
    path: str | None = None
    seed: int | None = None

    @property
    def random_init(self) -> bool:
        return self.source == "random-init"

    def to_dict(self) -> dict:
        return asdict(self)


def _check_named_file(path: str, what: str, how: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsNotFoundError(f"{what} weights file not found: {p} ({how})")
    return p


def known_identity(backbone: str, options: WeightsOptions | None = None) -> BackboneInfo | None | bool:
    """The :class:`BackboneInfo` a build of ``backbone`` will report, where it is known without torch: random-init
    weights, a named file or the published weights in the cache the registry names
    (:func:`thqa.features.weight_caches.cached_weights`), whose digest is remembered. None: the digest is not
    remembered (a build hashes it); False: the weights are in no known place, and the backbone's module locates or
    downloads them (with torch).

    Raises:
        WeightsNotFoundError: a named file that is not there (as the builders).
    """
    o = options or WeightsOptions()
    if o.random_init:
        sha = DigestCache().get(random_init_key(backbone, o.seed))
        return BackboneInfo(backbone, "random-init", sha, None, o.seed) if sha else None
    named = o.named_file(backbone)
    if named:
        p, source = _check_named_file(named, spec(backbone).title, _how(backbone)), "file"
    else:
        p, source = cached_weights(spec(backbone)), "cache"
        if p is None:
            return False
    sha = DigestCache().get(file_key(backbone, p))
    return BackboneInfo(backbone, source, sha, str(p), None) if sha else None


def known_infos(options: WeightsOptions | None, precision: str) -> dict[str, dict] | None:
    """What ``Backbones(options, precision=...).infos`` of every registered backbone will be, without torch, or None
    where one backbone's identity is not known so (:func:`known_identity`)."""
    infos: dict[str, dict] = {}
    for s in specs():
        info = known_identity(s.name, options)
        if not info:
            return None
        infos[info.name] = {**info.to_dict(), "precision": precision}
    return infos
