"""svds, spectral_norm and pca of DTensors, on 2 and 3 CPU processes with gloo (127.0.0.1).

Each test starts its own process group in fresh processes (`_distributed_worker.py`, which
always destroys it) and batches all its checks into one group: starting processes costs more
than the checks. A worker prints one line per failed check.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import torchsvd
from torchsvd import _distributed

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)

WORKER = Path(__file__).with_name("_distributed_worker.py")
TIMEOUT = 150.0  # seconds for a whole group; a hung collective fails the test, never the suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(world: int, *args: str) -> list[tuple[int, str]]:
    """Run the worker on ``world`` ranks; their exit statuses and outputs."""
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(world),
        "OMP_NUM_THREADS": "1",
        # The torchsvd this test imports, whatever the installed one.
        "PYTHONPATH": os.pathsep.join(
            [str(Path(torchsvd.__file__).parents[1]), str(WORKER.parent)]
        ),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world)
    ]
    deadline = time.monotonic() + TIMEOUT
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 1.0))
            results.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _check(results: list[tuple[int, str]]) -> None:
    failed = [f"rank {r} (exit {rc}):\n{out}" for r, (rc, out) in enumerate(results) if rc != 0]
    assert not failed, "\n".join(failed)


def test_two_processes() -> None:
    # Shard(0) with torch.chunk's and lopsided sizes, Shard(1), Replicate; float64 and float32;
    # losses of S, U, V and all three; pca; a loss written with DTensor ops; complex; errors.
    _check(_launch(2))


def test_three_processes() -> None:
    _check(_launch(3, "short"))


@pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.distributed.is_nccl_available()),
    reason="NCCL needs CUDA",
)
def test_nccl() -> None:
    # NCCL takes one GPU per rank (two ranks on one GPU are refused): two ranks where there are
    # two GPUs; on one GPU a single rank, which still runs every collective on CUDA tensors
    # (the shard sizes, the finiteness verdicts, the products) though nothing crosses ranks.
    _check(_launch(min(torch.cuda.device_count(), 2), "nccl"))


def test_not_a_dtensor() -> None:
    # The dispatch looks at the type only: plain tensors and operators go their usual way.
    A = torch.randn(5, 4, dtype=torch.float64)
    assert not _distributed.is_dtensor(A)
    assert not _distributed.is_dtensor(
        torchsvd.LinearOperator(A.shape, A.__matmul__, A.mT.__matmul__)
    )
