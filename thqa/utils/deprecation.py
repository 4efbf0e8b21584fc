"""Old module paths kept for one release: each forwards every name to the module's new home and warns once on import."""
from __future__ import annotations

import importlib
import warnings
from typing import Callable

__all__ = ["forward", "REMOVED_IN"]

#: the release that drops the old module paths
REMOVED_IN = "0.3.0"


def forward(old: str, new: str) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for a module ``old`` that re-exports module ``new``; warns with a
    DeprecationWarning naming both (the caller's import line)."""
    warnings.warn(f"{old} moved to {new}; the old path is removed in thqa {REMOVED_IN}", DeprecationWarning, stacklevel=3)
    module = importlib.import_module(new)

    def __getattr__(name: str) -> object:
        try:
            return getattr(module, name)
        except AttributeError:
            raise AttributeError(f"module {old!r} (now {new!r}) has no attribute {name!r}") from None

    def __dir__() -> list[str]:
        return sorted(set(dir(module)))

    return __getattr__, __dir__, list(getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")]))
