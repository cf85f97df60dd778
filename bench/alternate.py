"""Two revisions' top-ups, measured in turns: `bench/topup_cpu.py` run in a checkout of each,
alternately, `--pairs` times; then each process's CPU per top-up divided by the gateway's
(a process most changes do not touch), before and after. This machine's speed drifts by a
third from one minute to the next: raw rates from separate runs mostly measure the drift,
while a ratio within one run, compared over alternated runs, shows what the change did.

    .venv/bin/python bench/alternate.py BEFORE AFTER [--pairs 6] [--seconds 10]
        [--concurrency 32] [--by gateway]

BEFORE and AFTER are git revisions (a branch, a commit, `HEAD`); each is checked out in a
temporary worktree and run with this interpreter.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_RATE = re.compile(r"([\d,]+) req/s\s+p50\s+([\d.]+) ms\s+p99\s+([\d.]+) ms")
_CPU = re.compile(r"^\s+(\S+(?: own)?)\s+(\d+) µs per top-up", re.M)


def measure(checkout: Path, seconds: float, concurrency: int) -> dict[str, float]:
    """One run of `bench/topup_cpu.py` in `checkout`: the rate, p99 and µs per process."""
    out = subprocess.run(
        [sys.executable, "bench/topup_cpu.py", "--seconds", str(seconds),
         "--concurrency", str(concurrency)],
        cwd=checkout, capture_output=True, text=True, timeout=seconds + 300).stdout
    rate = _RATE.search(out)
    if rate is None:
        raise RuntimeError(f"no result from {checkout}:\n{out}")
    return {"rate": float(rate.group(1).replace(",", "")), "p99": float(rate.group(3)),
            **{name: float(us) for name, us in _CPU.findall(out)}}


def report(runs: dict[str, list[dict[str, float]]], by: str) -> list[str]:
    before, after = runs["before"], runs["after"]
    names = [n for n in before[0] if n not in ("rate", "p99")
             and all(n in r for r in before + after)]  # an older bench may show fewer
    lines = [f"{'':10s} {'rate':>8s} {'p99 ms':>7s} " + " ".join(f"{n:>13s}" for n in names)]
    for side, rows in runs.items():
        lines.append(f"{side:10s} {statistics.mean(r['rate'] for r in rows):8.0f} "
                     f"{statistics.mean(r['p99'] for r in rows):7.1f} "
                     + " ".join(f"{statistics.mean(r[n] for r in rows):13.0f}"
                                for n in names))
    lines.append(f"\neach process ÷ {by}, mean of the runs' ratios:")
    for n in names:
        if n == by:
            continue
        b = [r[n] / r[by] for r in before]
        a = [r[n] / r[by] for r in after]
        lower = sum(y < x for x, y in zip(b, a, strict=True))
        lines.append(f"  {n:13s} {statistics.mean(b):6.3f} → {statistics.mean(a):6.3f}"
                     f"  ({(statistics.mean(a) / statistics.mean(b) - 1) * 100:+5.1f} %,"
                     f" lower in {lower} of {len(a)} pairs)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--by", default="gateway")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="billing-alternate-") as scratch:
        checkouts = {}
        for side in ("before", "after"):
            checkouts[side] = Path(scratch) / side
            subprocess.run(["git", "worktree", "add", "--quiet", "--detach",
                            str(checkouts[side]), getattr(args, side)], cwd=ROOT, check=True)
        try:
            runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for n in range(args.pairs):
                for side in (("before", "after") if n % 2 == 0 else ("after", "before")):
                    runs[side].append(measure(checkouts[side], args.seconds, args.concurrency))
                    print(f"pair {n + 1} {side:6s} {runs[side][-1]}", flush=True)
        finally:
            for checkout in checkouts.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(checkout)],
                               cwd=ROOT)
    print(f"\n{args.before} → {args.after}: {args.pairs} pairs of `bench/topup_cpu.py"
          f" --seconds {args.seconds:g} --concurrency {args.concurrency}`, µs per top-up")
    print("\n".join(report(runs, args.by)))


if __name__ == "__main__":
    main()
