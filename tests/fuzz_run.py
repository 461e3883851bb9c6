"""``make fuzz``: run many property cases, print the counts per function and class, and a
shrunk reproducer of each kind of failure.

A script, not a test module: pytest collects only ``test_*.py``, so ``pytest tests`` never runs
it (its doctest collection only imports it), and it shares the strategies and oracles of
``tests/_properties.py`` with the CI slice ``tests/test_properties.py``.

Usage::

    python tests/fuzz_run.py [--cases 10000] [--workers 2] [--seed 0] [--sparse-cases 2000]
                             [--pca-cases 1000]
    python tests/fuzz_run.py --replay '<case JSON printed by a run>'

``--sparse-cases``: also that many random matrices through `svds`'s one-basis solver
(forward only; sparse, and a third dense with ``method="krylov"``: ``tests/_sparse_cases.py``);
``--pca-cases``: that many random data sets through `pca` (``tests/_pca_cases.py``). A failure
prints its seed, which ``check(seed)`` of that module replays.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import multiprocessing
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Shrinking a case keeps its class and makes it smaller; moves are tried in this order.
_MAX_SHRINK_STEPS = 80
_KEPT_PER_KIND = 5


def _size(case: Any) -> tuple[int, ...]:
    import math

    return (math.prod(case.batch), case.m * case.n, abs(case.scale_exp), case.seed)


def _worker(args: tuple[int, int]) -> tuple[collections.Counter[Any], dict[Any, list[Any]], int]:
    """Evaluate ``quota`` distinct cases drawn by hypothesis from ``seed``."""
    quota, seed = args
    import torch
    from hypothesis import given, settings
    from hypothesis import seed as hseed

    import _properties as P

    torch.set_num_threads(1)
    counts: collections.Counter[Any] = collections.Counter()
    kept: dict[Any, list[Any]] = collections.defaultdict(list)
    seen: set[str] = set()
    chunk = 0
    while len(seen) < quota and chunk < 1000:

        @hseed(seed * 1000 + chunk)
        @settings(P.settings.get_profile("fuzz"), max_examples=min(500, quota))
        @given(P.cases())
        def run(case: Any) -> None:
            key = case.to_json()
            if key in seen or len(seen) >= quota:
                return
            seen.add(key)
            outcome = P.evaluate(case)
            counts[(case.func, outcome.cls)] += 1
            if outcome.cls != "pass":
                bucket = kept[(case.func, outcome.cls)]
                bucket.append((case, outcome.detail))
                bucket.sort(key=lambda item: _size(item[0]))
                del bucket[_KEPT_PER_KIND:]

        run()
        chunk += 1
    return counts, dict(kept), len(seen)


def _shrink(case: Any, cls: str) -> tuple[Any, str]:
    """Greedy shrinking: smaller batch, float64, unit scale, smaller shape, seed 0."""
    import _properties as P

    def same(c: Any) -> str | None:
        try:
            out = P.evaluate(c)
        except Exception:  # a harness error on a shrunk case: not a smaller example
            return None
        return out.detail if out.cls == cls else None

    detail = P.evaluate(case).detail
    steps = 0

    def moves(c: Any) -> list[Any]:
        out = []
        if c.batch:
            out.append(dataclasses.replace(c, batch=(), spread=0))
        if c.dtype != "float64" and c.loss != "raw":  # raw: a complex-only loss
            out.append(dataclasses.replace(c, dtype="float64"))
            if c.dtype == "complex64":
                out.append(dataclasses.replace(c, dtype="complex128"))
        if c.scale_exp:
            out.append(dataclasses.replace(c, scale_exp=0))
            out.append(dataclasses.replace(c, scale_exp=int(c.scale_exp / 2)))
        for dm, dn in ((1, 1), (1, 0), (0, 1)):
            m, n = c.m - dm, c.n - dn
            if m >= 1 and n >= 1:
                k = min(m, n)
                rel = c.rel[:k]
                top = rel[0] if rel and rel[0] > 0 else 1.0
                rel = tuple(x / top for x in rel)
                out.append(dataclasses.replace(c, m=m, n=n, rel=rel, r=min(c.r, k)))
        if c.seed:
            out.append(dataclasses.replace(c, seed=0))
        return out

    improved = True
    while improved and steps < _MAX_SHRINK_STEPS:
        improved = False
        for cand in moves(case):
            steps += 1
            d = same(cand)
            if d is not None:
                case, detail, improved = cand, d, True
                break
    return case, detail


def _seeded_worker(job: tuple[str, range]) -> list[str]:
    """The failures among the cases ``seeds`` of the module ``name`` (its ``check``)."""
    import importlib

    import torch

    name, seeds = job
    module = importlib.import_module(name)
    torch.set_num_threads(1)
    failures = []
    for seed in seeds:
        try:
            found = module.check(seed)
        except Exception as err:  # an error is a failure of the case, with its message
            found = f"seed {seed}: {type(err).__name__}: {err}"
        if found is not None:
            failures.append(found)
    return failures


def _seeded_fuzz(name: str, what: str, cases: int, workers: int, seed: int) -> int:
    """Run ``cases`` cases of the module ``name`` (seeds past the CI slice's), print the
    failures, count them."""
    start = time.time()
    first = 10**6 * (seed + 1)
    jobs = [(name, range(first + w, first + cases, workers)) for w in range(workers)]
    if workers == 1:
        found = _seeded_worker(jobs[0])
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            found = [f for part in pool.map(_seeded_worker, jobs) for f in part]
    print(f"\ntorchsvd {what}: {cases} in {time.time() - start:.0f} s: {len(found)} failures")
    for line in found:
        print(f"  {line}")
    return len(found)


def _table(counts: collections.Counter[Any], classes: tuple[str, ...]) -> str:
    funcs = sorted({f for f, _ in counts})
    head = ["function", "cases", *classes]
    rows = []
    for f in [*funcs, "total"]:
        sel = {
            c: sum(v for (g, k), v in counts.items() if k == c and (f == "total" or g == f))
            for c in classes
        }
        rows.append([f, str(sum(sel.values()))] + [str(sel[c]) for c in classes])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        cells = enumerate(zip(r, widths, strict=True))
        return "  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in cells)

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-shrink", action="store_true")
    parser.add_argument("--sparse-cases", type=int, default=0)
    parser.add_argument("--pca-cases", type=int, default=0)
    parser.add_argument("--replay", type=str, default=None, help="a case JSON to re-run")
    args = parser.parse_args(argv)

    import _properties as P

    if args.replay:
        case = P.Case.from_json(args.replay)
        print(P.evaluate(case))
        return 0
    start = time.time()
    per = -(-args.cases // args.workers)
    jobs = [(per, args.seed * 100 + w) for w in range(args.workers)]
    if args.workers == 1:
        results = [_worker(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            results = pool.map(_worker, jobs)
    counts: collections.Counter[Any] = collections.Counter()
    kept: dict[Any, list[Any]] = collections.defaultdict(list)
    total = 0
    for c, k, n in results:
        counts.update(c)
        total += n
        for key, items in k.items():
            kept[key].extend(items)
    elapsed = time.time() - start
    print(f"torchsvd fuzz: {total} distinct cases in {elapsed:.0f} s ({args.workers} workers)\n")
    print(_table(counts, P.CLASSES))
    if kept:
        print("\nFailures: one shrunk reproducer per (function, class); replay with")
        print("  python tests/fuzz_run.py --replay '<JSON>'\n")
    for (func, cls), items in sorted(kept.items()):
        items.sort(key=lambda item: _size(item[0]))
        case, detail = items[0]
        if not args.no_shrink:
            case, detail = _shrink(case, cls)
        print(f"[{func} / {cls}] {detail}")
        print(f"  {case.to_json()}")
    failures = sum(v for (_, c), v in counts.items() if c != "pass")
    if args.sparse_cases:
        what = "sparse and dense matrices through the one-basis svds"
        failures += _seeded_fuzz("_sparse_cases", what, args.sparse_cases, args.workers, args.seed)
    if args.pca_cases:
        what = "data sets through pca"
        failures += _seeded_fuzz("_pca_cases", what, args.pca_cases, args.workers, args.seed)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
