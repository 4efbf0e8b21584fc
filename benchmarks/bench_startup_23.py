"""Interleaved wall time of `python -c "import thqa"` and `thqa --help` for two checkouts (issue 23: the house by role must
not be slower). usage: python benchmarks/bench_startup_23.py BEFORE_CHECKOUT AFTER_CHECKOUT [RUNS]; prints JSON (results/startup_23_house.json)."""
import json, os, statistics, subprocess, sys, time
trees = {"before": sys.argv[1], "after": sys.argv[2]}
cmds = {"import thqa": ["-c", "import thqa"], "thqa --help": ["-c", "import sys; from thqa.cli import main; sys.argv=['thqa','--help']; main()"]}
py = sys.executable
res = {c: {t: [] for t in trees} for c in cmds}
for c, args in cmds.items():  # warm-up: writes the bytecode caches
    for t, path in trees.items():
        env = dict(os.environ, PYTHONPATH=path); env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([py, *args], cwd="/tmp", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
for i in range(int(sys.argv[3]) if len(sys.argv) > 3 else 15):
    for c, args in cmds.items():
        for t, path in trees.items():
            env = dict(os.environ, PYTHONPATH=path)
            env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode cached (written by the first, untimed run)
            t0 = time.perf_counter()
            subprocess.run([py, *args], cwd="/tmp", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            res[c][t].append(time.perf_counter() - t0)
out = {c: {t: {"median_s": round(statistics.median(v), 4), "min_s": round(min(v), 4), "runs": len(v)} for t, v in d.items()} for c, d in res.items()}
print(json.dumps(out, indent=1))
