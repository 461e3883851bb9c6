"""svds of a DTensor on 1, 2 and 4 CPU processes (gloo): collectives, bytes per block step, time.

Usage: python benchmarks/bench_distributed.py [--quick] [--repeats N] [--k K] [--sharding rows|cols]

A float32 matrix ``m × n`` with a decaying spectrum (``--quick``: 4000 × 500, else 20000 × 2000)
is built shard by shard (each process makes only its own rows or columns) and `torchsvd.svds`
runs on the DTensor, forward and forward+backward of a loss of U and S. The collectives are
counted by ``torchsvd._distributed.count_collectives``, by purpose: the all-reduces that complete
a product (one per block step: ``Aᴴ Y`` for rows, ``A X`` for columns; the start and the
convergence checks add some), the all-reduces of inner products and norms of the sharded side's
vectors, and the setup (size probe); bytes per block step are per product collective. The
peer is single-process `torchsvd.svds` on the whole matrix, with 1 and with 2 threads, timed in
the same run: configurations alternate
round by round (each a fresh launch), times are medians over the repeats inside a launch, then
over the rounds. On a machine with fewer cores than processes the processes share cores: only
the counts, not the times, then say anything about a cluster (docs/distributed.md has the model).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

SEED_AXES = 0


def _shard_bounds(extent: int, world: int, rank: int) -> tuple[int, int]:
    """torch.chunk's split (distribute_tensor's): this rank's start and size."""
    sizes = [len(c) for c in torch.arange(extent).chunk(world)]
    return sum(sizes[:rank]), sizes[rank]


def _block(m: int, n: int, rows: slice, cols: slice) -> torch.Tensor:
    """Rows ``rows``, columns ``cols`` of ``A = G diag(s) Wᵀ + noise``, made block by block.

    G's rows and the noise are seeded by the 500-row block they belong to, W by the column
    block, so every process makes the same matrix without making the whole of it.
    """
    r = 64
    s = 1.0 / (1.0 + torch.arange(r, dtype=torch.float64))
    axes = torch.Generator().manual_seed(SEED_AXES)
    W = torch.randn(n, r, generator=axes, dtype=torch.float64)
    parts = []
    for start in range(rows.start - rows.start % 500, rows.stop, 500):
        gen = torch.Generator().manual_seed(1_000 + start)
        G = torch.randn(500, r, generator=gen, dtype=torch.float64)
        noise = torch.randn(500, n, generator=gen, dtype=torch.float64) * 1e-3
        lo, hi = max(rows.start, start) - start, min(rows.stop, start + 500) - start
        parts.append((G[lo:hi] * s) @ W[cols].T + noise[lo:hi, cols])
    return torch.cat(parts).to(torch.float32).contiguous()


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    import torchsvd
    from torchsvd._distributed import count_collectives

    torch.set_num_threads(args.threads)
    m, n, k = args.m, args.n, args.k
    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.plain:
            A: torch.Tensor = _block(m, n, slice(0, m), slice(0, n))
            W = torch.randn(m, k, generator=torch.Generator().manual_seed(5))
        else:
            mesh = init_device_mesh("cpu", (world,))
            dim = 0 if args.sharding == "rows" else 1
            start, size = _shard_bounds((m, n)[dim], world, rank)
            part = slice(start, start + size)
            local = _block(m, n, part, slice(0, n)) if dim == 0 else _block(m, n, slice(0, m), part)
            A = DTensor.from_local(
                local, mesh, [Shard(dim)], run_check=False, shape=(m, n), stride=(n, 1)
            )
            W = torch.randn(m, k, generator=torch.Generator().manual_seed(5))
            if dim == 0:
                W = W[part]
        A.requires_grad_()

        def forward() -> tuple[torch.Tensor, ...]:
            return torchsvd.svds(A, k)

        def both() -> None:
            U, S, _ = forward()
            U = U.to_local() if not args.plain else U  # type: ignore[attr-defined]
            S = S.to_local() if not args.plain else S  # type: ignore[attr-defined]
            ((W * U**2).sum() + S.sum()).backward()
            A.grad = None

        with count_collectives() as fwd:
            forward()
        with count_collectives() as total:
            both()
        times: dict[str, list[float]] = {"fwd": [], "both": []}
        for _ in range(args.repeats):
            for name, fn in (("fwd", forward), ("both", both)):
                dist.barrier()
                t0 = time.perf_counter()
                fn()
                dist.barrier()
                times[name].append(time.perf_counter() - t0)
        if rank == 0:
            record = {
                "fwd_calls": fwd.calls,
                "fwd_bytes": fwd.bytes,
                "all_calls": total.calls,
                "all_bytes": total.bytes,
                "fwd": statistics.median(times["fwd"]),
                "both": statistics.median(times["both"]),
            }
            print("RESULT " + json.dumps(record), flush=True)
    finally:
        dist.destroy_process_group()


def _launch(args: argparse.Namespace, world: int, threads: int, plain: bool) -> dict[str, object]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, __file__, "--worker", "--threads", str(threads)]
    cmd += ["--m", str(args.m), "--n", str(args.n), "--k", str(args.k)]
    cmd += ["--repeats", str(args.repeats), "--sharding", args.sharding]
    cmd += ["--plain"] if plain else []
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    env |= {"WORLD_SIZE": str(world), "OMP_NUM_THREADS": str(threads)}
    procs = [
        subprocess.Popen(cmd, env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, text=True)
        for r in range(world)
    ]
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a worker failed: {outs}")
    line = next(x for x in outs[0].splitlines() if x.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT ") :]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--sharding", choices=("rows", "cols"), default="rows")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--m", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    args.m, args.n = (4000, 500) if args.quick else (20000, 2000)
    args.repeats = args.repeats or (2 if args.quick else 3)
    rounds = args.rounds or (1 if args.quick else 2)
    configs = [  # (label, processes, threads per process, plain tensor)
        ("svds, 1 process × 2 threads (peer)", 1, 2, True),
        ("svds, 1 process × 1 thread", 1, 1, True),
        ("DTensor, 1 process × 1 thread", 1, 1, False),
        ("DTensor, 2 processes × 1 thread", 2, 1, False),
        ("DTensor, 4 processes × 1 thread", 4, 1, False),
    ]
    runs: dict[str, list[dict[str, object]]] = {c[0]: [] for c in configs}
    for _ in range(rounds):
        for label, world, threads, plain in configs:
            runs[label].append(_launch(args, world, threads, plain))

    from _timing import machine_line
    from torchsvd._lanczos import default_block_size

    torch.set_num_threads(1)
    b = default_block_size(args.k)
    print(machine_line(torch.device("cpu"), args.repeats).replace("1 threads", "threads below"))
    print(
        f"A: {args.m} × {args.n} float32, sharded by {args.sharding}, k = {args.k}, block "
        f"b = {b}, {os.cpu_count()} cores, {rounds} rounds; ratio = peer time / this time "
        "(> 1: faster than 1 process × 2 threads)"
    )
    print()
    print(
        "| configuration | collectives fwd (product, inner, setup) | fwd+bwd "
        "| KiB / step: product | inner | fwd (s) | ratio | fwd+bwd (s) | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    kinds_of = ("product", "inner")
    peer = runs[configs[0][0]]
    peer_fwd = statistics.median(float(r["fwd"]) for r in peer)  # type: ignore[arg-type]
    peer_both = statistics.median(float(r["both"]) for r in peer)  # type: ignore[arg-type]
    for label, *_ in configs:
        rec = runs[label]
        fwd = statistics.median(float(r["fwd"]) for r in rec)  # type: ignore[arg-type]
        both = statistics.median(float(r["both"]) for r in rec)  # type: ignore[arg-type]
        calls: dict[str, int] = rec[0]["fwd_calls"]  # type: ignore[assignment]
        sent: dict[str, int] = rec[0]["fwd_bytes"]  # type: ignore[assignment]
        every: dict[str, int] = rec[0]["all_calls"]  # type: ignore[assignment]
        kinds = [calls.get(kind, 0) for kind in ("product", "inner", "setup")]
        steps = kinds[0]  # one product collective per block step
        product, inner = (sent.get(kind, 0) / steps / 1024 if steps else 0.0 for kind in kinds_of)
        print(
            f"| {label} | {sum(calls.values())} ({', '.join(map(str, kinds))}) "
            f"| {sum(every.values())} | {product:.1f} | {inner:.1f} | {fwd:.3g} "
            f"| {peer_fwd / fwd:.2f}× | {both:.3g} | {peer_both / both:.2f}× |"
        )
    print()
    unsharded = args.n if args.sharding == "rows" else args.m
    print(
        f"Model of one block step: one all-reduce of the unsharded side × b, "
        f"{unsharded}·{b}·4 B = {unsharded * b * 4 / 1024:.1f} KiB in float32, and about "
        "8 all-reduces of at most d × b float64 numbers (d: the basis size) for the inner "
        "products of the sharded side."
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
