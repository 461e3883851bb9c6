"""Shared timing loop of the benchmark scripts: two callables, alternated, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


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
