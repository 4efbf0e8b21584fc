"""Start-up of the commands that should not load what they do not need (issue 22): `thqa --help`, and a
`thqa extract` of 3 files whose every entry is already cached, timed as subprocesses, interleaved between the code
under test and a baseline checkout (PYTHONPATH), N runs each; medians to benchmarks/results/startup_22.json.

    python benchmarks/bench_startup_22.py --baseline /work/main [--runs 5] [--media ../shared/media]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import RESULTS, ROOT, SHARED_MEDIA, machine

FILES = ("vid_ai_dreamtalk_male_256.mp4", "vid_ai_dreamtalk_painting_zh_256.mp4", "vid_ai_woman_512_oddavgfps.mp4")


def _run(code: Path, argv: list[str], env: dict) -> float:
    """Wall seconds of ``python -m thqa.cli.app *argv`` (``argv[0] == "-c"``: ``python -c ...``) with ``code`` first on the path."""
    cmd = [sys.executable, *argv] if argv[0] == "-c" else [sys.executable, "-m", "thqa.cli", *argv]
    t = time.perf_counter()
    # run from the checkout itself: `python -m` puts the working folder before PYTHONPATH, so from anywhere else a
    # `thqa` package there (this checkout's, when run from it) would be timed instead of ``code``'s
    proc = subprocess.run(cmd, env={**env, "PYTHONPATH": str(code)}, cwd=code, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{code}: thqa {' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True, help="checkout to compare with (e.g. the main branch)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--media", type=Path, default=SHARED_MEDIA)
    ap.add_argument("--out", type=Path, default=RESULTS / "startup_22.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = tmp / "manifest.csv"
        manifest.write_text("path\n" + "".join(f"{a.media / f}\n" for f in FILES))
        env = {**os.environ, "THQA_CACHE_HOME": str(tmp / "home"), "OMP_NUM_THREADS": "1"}
        extract = ["-q", "extract", str(manifest), "--cache-dir", str(tmp / "cache"), "--random-init", "--clips", "1", "--precision", "fp32", "--workers", "0"]
        prime = _run(ROOT, extract, env)  # extracts the 3 files (and remembers the weights' digests)
        cases = {"help": ["--help"], "all_cached_extract_3_files": extract}
        times: dict = {k: {"baseline": [], "this": []} for k in cases}
        # how loaded the machine is, in the same rounds: the interpreter alone, and `import torch` (the floor of any
        # command that runs a model; 1.5-1.9 s on this machine when quiet)
        floors: dict = {"python_start": [], "import_torch": []}
        for _ in range(a.runs):
            for name, argv in cases.items():
                for which, code in (("baseline", a.baseline), ("this", ROOT)):
                    times[name][which].append(round(_run(code, argv, env), 3))
            floors["python_start"].append(round(_run(ROOT, ["-c", "pass"], env), 3))
            floors["import_torch"].append(round(_run(ROOT, ["-c", "import torch"], env), 3))
    doc = {
        "what": "wall seconds of a subprocess `python -m thqa.cli.app ...`, interleaved baseline/this, "
        f"{a.runs} runs each; extract: --random-init --clips 1 --precision fp32 --workers 0 of 3 files all in the cache",
        "files": list(FILES),
        "prime_extract_s": round(prime, 2),
        "baseline": str(a.baseline),
        "this": str(ROOT),
        "median_s": {k: {w: statistics.median(v) for w, v in t.items()} for k, t in times.items()},
        "runs_s": times,
        "load_reference_median_s": {k: statistics.median(v) for k, v in floors.items()},
        "load_reference_runs_s": floors,
        "machine": machine(),
    }
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["median_s"], indent=2))


if __name__ == "__main__":
    main()
