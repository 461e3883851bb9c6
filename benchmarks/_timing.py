"""The timing loop of all benchmark scripts: medians of synchronized runs (one callable, or two
alternated)."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(
    fn: Callable[[], T], repeat: int, device: torch.device | None = None
) -> tuple[float, T]:
    """Median seconds of ``repeat`` runs of ``fn`` (no warm-up), and its last output."""
    times, out = [], None
    for _ in range(repeat):
        t, out = timed(fn, device)
        times.append(t)
    return statistics.median(times), out  # type: ignore[return-value]


def timed(fn: Callable[[], T], device: torch.device | None = None) -> tuple[float, T]:
    """Seconds of one synchronized run of ``fn``, and its output."""
    device = torch.device("cpu") if device is None else device
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def time_pair(
    fns: tuple[Callable[[], object], Callable[[], object]], repeats: int, device: torch.device
) -> tuple[float, float]:
    """Median seconds of each of two callables, run alternately so drift hits both alike."""
    for fn in fns:  # warm-up (allocator, LAPACK workspaces, CUDA handles)
        fn()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, acc in zip(fns, times, strict=True):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            acc.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def device_args(doc: str, full_repeats: int) -> argparse.Namespace:
    """``--quick``, ``--repeats``, ``--device`` of the scripts that time torchsvd against torch."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    args.repeats = args.repeats or (3 if args.quick else full_repeats)
    return args


def print_pair_table(
    rows: list[tuple[str, tuple[float, float, float, float]]], header: str
) -> None:
    """Versions, machine, then a Markdown table of (torch fwd, ours fwd, torch fwd+bwd, ours
    fwd+bwd) per shape with the ratios torch / torchsvd (> 1: torchsvd is faster)."""
    print(header)
    print()
    print(
        "| shape | torch fwd (s) | torchsvd fwd (s) | ratio | torch fwd+bwd (s) "
        "| torchsvd fwd+bwd (s) | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (fr, fo, br, bo) in rows:
        print(
            f"| {name} | {fr:.4g} | {fo:.4g} | {fr / fo:.2f}× | {br:.4g} | {bo:.4g} "
            f"| {br / bo:.2f}× |"
        )


def machine_line(device: torch.device, repeats: int) -> str:
    """Versions and machine, for the first line of a benchmark's output."""
    import torchsvd

    return (
        f"torch {torch.__version__}, torchsvd {torchsvd.__version__}, python "
        f"{platform.python_version()}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, device {device}, float32, median of {repeats}"
    )
