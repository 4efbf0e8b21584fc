"""thqa: no-reference quality assessment of talking-head videos (pictures and sound together)."""
from __future__ import annotations

__version__ = "0.1.0"

from thqa.errors import *  # noqa: F401,F403
