"""Runs every benchmark of the project, bounded to about 14 minutes on 2 cores.

    python bench/run.py            # the full run
    python bench/run.py --quick    # a fast smoke run (about a minute)

In order: bench/overhead.py (throughput and overhead against direct, the pass-through
and LiteLLM), bench/selection_bench.py (Selector.rank over 100 models) and, when it
exists, bench/quality.py (routing quality). Each runs as its own process with a time
limit; results go to bench/results/*-<date>.json. Exit status: 0 when every part ran
and the overhead run was valid.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BUDGET_S = 14 * 60


def _run(name: str, cmd: list[str], timeout: float) -> dict:
    print(f"\n## {name}\n\n$ {' '.join(cmd)}\n", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    finally:  # SIGTERM first: the benchmark then stops its own servers and load generators
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    seconds = time.monotonic() - started
    status = "timed out" if code is None else f"exit {code}"
    print(f"\n[{name}: {status} after {seconds:.0f} s]", flush=True)
    return {"name": name, "exit": code, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: short, one repetition")
    p.add_argument("--skip-litellm", action="store_true", help="leave LiteLLM out")
    p.add_argument("--skip-quality", action="store_true", help="leave bench/quality.py out")
    p.add_argument("--duration", type=int, default=10, help="seconds per overhead load run")
    p.add_argument("--repetitions", type=int, default=3, help="overhead rounds")
    args = p.parse_args(argv)

    started = time.monotonic()
    stamp = datetime.date.today().isoformat()
    results = BENCH / "results"
    py = sys.executable
    overhead = [py, str(BENCH / "overhead.py"), "--json", str(results / f"overhead-{stamp}.json")]
    if args.quick:
        overhead.append("--quick")
        # A smoke run installs nothing: LiteLLM joins only if its venv is already there.
        if not (BENCH / ".venv-litellm" / "bin" / "litellm").exists():
            args.skip_litellm = True
    else:
        overhead += ["--duration", str(args.duration), "--repetitions", str(args.repetitions)]
        overhead += ["--time-limit", "480"]
    if args.skip_litellm:
        overhead.append("--skip-litellm")
    parts = [_run("overhead", overhead, timeout=720)]

    selection = [py, str(BENCH / "selection_bench.py"), "--json"]
    selection += [str(results / f"selection-{stamp}.json")] + (["--quick"] if args.quick else [])
    parts.append(_run("selection", selection, timeout=180))

    if (BENCH / "quality.py").exists() and not args.skip_quality:
        remaining = BUDGET_S - (time.monotonic() - started)
        quality = ["--json", str(results / f"quality-{stamp}.json")]
        quality += ["--quick"] if args.quick else []
        code = "import sys; from bench import quality; sys.exit(quality.main(sys.argv[1:]))"
        parts.append(_run("quality", [py, "-c", code, *quality], timeout=max(120, remaining)))

    total = time.monotonic() - started
    print(f"\n## summary ({total:.0f} s)\n")
    for part in parts:
        status = "timed out" if part["exit"] is None else f"exit {part['exit']}"
        print(f"- {part['name']}: {status}, {part['seconds']:.0f} s")
    print(f"- results: {results}/*-{stamp}.json")
    return 0 if all(part["exit"] == 0 for part in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
