"""PCA of a data set whose rows (samples) are spread over processes, with torchsvd and DTensor.

Run with ``torchrun --nproc-per-node 2 examples/distributed_pca.py`` (any number of processes;
gloo on CPU, NCCL when every process has a GPU). Each rank makes its own block of samples, which
is never sent anywhere: `torchsvd.pca` multiplies the blocks where they are and exchanges
blocks of vectors only (docs/distributed.md). The principal axes come back replicated, the
scores sharded like the data, and a gradient reaches each rank's own samples.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard

import torchsvd

SAMPLES, FEATURES, COMPONENTS = 20_001, 300, 4


def local_samples(rank: int, rows: int, device: torch.device) -> torch.Tensor:
    """This rank's samples: 4 strong directions (the same on every rank), noise, an offset."""
    axes = torch.linalg.qr(
        torch.randn(FEATURES, COMPONENTS, generator=torch.Generator().manual_seed(0))
    )[0]
    gen = torch.Generator().manual_seed(1 + rank)  # each rank draws its own samples
    scores = torch.randn(rows, COMPONENTS, generator=gen) * torch.tensor([8.0, 4.0, 2.0, 1.0])
    noise = 0.1 * torch.randn(rows, FEATURES, generator=gen)
    return (scores @ axes.T + noise + 5.0).to(device)


def main() -> None:
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        device = torch.device("cuda", rank % torch.cuda.device_count()) if cuda else "cpu"
        if cuda:
            torch.cuda.set_device(device)
        mesh = init_device_mesh(device.type if cuda else "cpu", (world,))
        # torch.chunk's split of the rows, the layout DTensor assumes for Shard(0).
        rows = [len(c) for c in torch.arange(SAMPLES).chunk(world)]
        X = DTensor.from_local(
            local_samples(rank, rows[rank], torch.device(device)),
            mesh,
            [Shard(0)],
            run_check=False,
            shape=torch.Size((SAMPLES, FEATURES)),
            stride=(FEATURES, 1),
        ).requires_grad_()

        U, S, Vh = torchsvd.pca(X, COMPONENTS)  # U: Shard(0) like X; S, Vh: replicated
        variances = S.to_local() ** 2 / (SAMPLES - 1)
        # A loss of the explained variance: its gradient lands on each rank's own samples.
        variances.sum().backward()
        assert X.grad is not None
        if rank == 0:
            print(f"{world} processes, {SAMPLES} x {FEATURES} samples, rows per rank {rows}")
            print("explained variances:", [round(float(v), 3) for v in variances.detach()])
            print("placements: U", U.placements, "S", S.placements, "Vh", Vh.placements)
        print(
            f"rank {rank}: holds {tuple(X.to_local().shape)} samples, scores "
            f"{tuple(U.to_local().shape)}, gradient {tuple(X.grad.to_local().shape)}",
            flush=True,
        )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
