"""A client of ``thqa serve`` (standard library only): ``thqa.Client(url).score(path)`` returns what
``thqa.Scorer(...).score(path)`` returns, scored by the service's warm models.

>>> client = thqa.Client("http://127.0.0.1:8000")      # doctest: +SKIP
>>> client.score("talking_head.mp4").mos                # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from thqa import errors as thqa_errors
from thqa.errors import MediaFileNotFoundError, ServiceError, THQAError
from thqa.engines.serve_defaults import TOKEN_ENV
from thqa.scoring.result import ScoreResult

__all__ = ["Client"]

log = logging.getLogger(__name__)

#: refusals about one file (too large, too slow): the others are still sent
_PER_FILE = (413, 504)
#: tries again after a full queue (503), waiting its Retry-After each time
_RETRIES = 5


class Client:
    """Scores files on a running ``thqa serve``.

    Args:
        url: the service, e.g. ``http://127.0.0.1:8000``.
        token: its token (default: ``$THQA_SERVE_TOKEN``, else none).
        coverage: of the prediction intervals (default: the service's).
        timeout: seconds to wait for an answer (default: none).
    """

    def __init__(self, url: str, token: str | None = None, *, coverage: float | None = None, timeout: float | None = None):
        self.url = url.rstrip("/")
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.coverage, self.timeout = coverage, timeout
        self.checkpoint = None  # the CLI's provenance line: the service's model is not ours to describe

    def health(self) -> dict:
        """The service's ``/healthz``: its weights, precision, recipe, whether it is untrained.

        Raises:
            ServiceError: the service cannot be reached or is not ready.
        """
        return self._call("GET", "/healthz")

    def expect(self) -> dict:
        """What every row of this service holds (for ``thqa score --server --resume``)."""
        h = self.health()
        return {"untrained": h["untrained"], "weights": h["weights"], "precision": h["precision"], "model": h.get("model")}

    def score(self, path: str | os.PathLike, *, timeline: bool = False, sync: bool = False):
        """The :class:`thqa.ScoreResult` of one file, with ``path`` as given.

        Raises:
            THQAError subclasses: the file is missing or not a usable video (the service's own type), or
            :class:`ServiceError` for a refusal (token, size, full queue, timeout) or an unreachable service.
        """
        res = self._score(path, timeline=timeline, sync=sync)
        if res.error:
            cls = getattr(thqa_errors, res.error_type or "", None)
            raise (cls if isinstance(cls, type) and issubclass(cls, THQAError) else THQAError)(res.error)
        return res

    def iter_score(self, paths: Iterable[str | os.PathLike]) -> Iterator:
        """A :class:`thqa.ScoreResult` per path, in order; a failure is an error result and the batch goes on."""
        return self.iter_explain(paths, timeline=False, sync=False)

    def iter_explain(self, paths: Iterable[str | os.PathLike], *, timeline: bool = True, sync: bool = False) -> Iterator:
        """:meth:`score` with the per-second scores and/or the lip sync offset, as :meth:`thqa.Scorer.iter_explain`."""
        for p in paths:
            try:
                yield self._score(p, timeline=timeline, sync=sync)
            except ServiceError as exc:
                if exc.status not in _PER_FILE:  # no token, unreachable: no file would fare better
                    raise
                yield _error_result(str(p), exc.error_type or "ServiceError", str(exc))
            except THQAError as exc:
                yield _error_result(str(p), type(exc).__name__, str(exc))

    def _score(self, path, *, timeline: bool, sync: bool):
        p = Path(path)
        if not p.is_file():
            raise MediaFileNotFoundError(f"{path}: no such file")
        query = {"timeline": str(timeline).lower(), "sync": str(sync).lower()}
        if self.coverage is not None:
            query["coverage"] = repr(self.coverage)
        body, ctype = _multipart(p)
        try:
            for attempt in range(_RETRIES + 1):
                try:
                    row = self._call("POST", "/score?" + urllib.parse.urlencode(query), body, ctype)
                    break
                except ServiceError as exc:  # a full queue: wait as told, then try again
                    if exc.status != 503 or attempt == _RETRIES:
                        raise
                    time.sleep(min(60.0, float(exc.retry_after or 1)))
        except _FileError as exc:
            return _error_result(str(path), exc.error_type, str(exc).replace(exc.name, str(path)) if exc.name else str(exc))
        return _result(row, str(path))

    def _call(self, method: str, route: str, body: bytes | None = None, ctype: str | None = None) -> dict:
        req = urllib.request.Request(self.url + route, data=body, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise _refusal(exc, self.url + route) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServiceError(f"{self.url}: cannot reach the scoring service ({getattr(exc, 'reason', exc)})") from None


class _FileError(THQAError):
    """The service could not score the file (422 and kin): an error result, not a refusal."""

    def __init__(self, message: str, error_type: str, name: str | None):
        super().__init__(message)
        self.error_type, self.name = error_type, name


def _refusal(exc: urllib.error.HTTPError, url: str) -> THQAError:
    try:
        doc = json.loads(exc.read())
    except ValueError:
        doc = {}
    msg, etype = doc.get("error") or f"{url}: HTTP {exc.code} {exc.reason}", doc.get("error_type") or "ServiceError"
    if exc.code in (422, 500) and "path" in doc:
        return _FileError(msg, etype, doc.get("path"))
    err = ServiceError(f"{url}: {msg}" if not msg.startswith(url) else msg)
    err.status, err.error_type = exc.code, etype
    err.retry_after = exc.headers.get("Retry-After") if exc.headers else None
    return err


def _multipart(path: Path) -> tuple[bytes, str]:
    """``(body, content type)`` of a multipart/form-data upload of ``path`` as the field ``file``."""
    boundary = uuid.uuid4().hex
    name = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode("utf-8", "surrogateescape")
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _result(row: dict, path: str) -> ScoreResult:
    names = {f.name for f in dataclasses.fields(ScoreResult)}
    return ScoreResult(**{**{k: v for k, v in row.items() if k in names}, "path": path})


def _error_result(path: str, error_type: str, message: str) -> ScoreResult:
    return ScoreResult(path=path, mos=None, clip_scores=None, error=message, error_type=error_type)
