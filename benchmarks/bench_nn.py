"""torchsvd.nn.spectral_norm against PyTorch's spectral_norm: Linear and CNN training steps, the
operator norm of a convolution, torch.compile.

Usage: python benchmarks/bench_nn.py [--quick] [--part linear|conv|cnn|compile|all] [--steps N]
       [--threads T] [--backends aot_eager,inductor]

- linear: Linear(1024, 1024), batch 64, SGD on a regression loss. The two layers start from the
  same weights and are stepped alternately; median step time, ratio torchsvd / PyTorch, and how
  far each layer's σ_1 (the one it divided by) is from the largest singular value of its weight.
- conv: Conv2d(64, 64, 3, padding=1) on 64×32×32 inputs, float64: the operator norm (torchsvd,
  ``input_shape``) against the norm of the reshaped kernel that PyTorch normalises by, and, with
  ``padding_mode='circular'``, against the FFT formula of Sedghi, Gupta & Long (2019).
- cnn: three Conv2d layers and a Linear one, batch 64 of 3×32×32, SGD with momentum, every layer
  spectrally normalised (torchsvd: the convolutions by their operator norm); step times,
  alternated, and per step the relative error of the σ each convolution divided by against its
  operator norm (power iteration in float64, warm-started, written here with torch's conv and
  conv_transpose: independent of torchsvd).
- compile: graph breaks (torch._dynamo.explain), wall and CPU time of the first compiled
  training step (compilation included) of the CNN, for each backend, and for inductor the size
  of its FX graphs and the number of C++ kernels it compiles (load-independent).
"""

from __future__ import annotations

import argparse
import copy
import platform
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

import torchsvd
from _timing import timed

TORCH = "torch.nn.utils.parametrizations.spectral_norm"
OURS = "torchsvd.nn.spectral_norm"


def _versions() -> str:
    return (
        f"torch {torch.__version__}, torchsvd {torchsvd.__version__}, python "
        f"{platform.python_version()}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads"
    )


def _sigma_error(layer: nn.Module) -> float:
    """|σ used − σ_1(W)| / σ_1(W): the normalised weight's 2-norm should be exactly 1."""
    with torch.no_grad():
        layer.eval()
        w = layer.weight
        layer.train()
        return abs(float(torch.linalg.matrix_norm(w.double(), 2)) - 1.0)


def bench_linear(quick: bool, steps: int | None, lr: float) -> None:
    size, batch = (128, 16) if quick else (1024, 64)
    steps = steps or (5 if quick else 40)
    torch.manual_seed(0)
    base = nn.Linear(size, size)
    layers = {
        TORCH: torch_spectral_norm(copy.deepcopy(base)),
        OURS: torchsvd.nn.spectral_norm(copy.deepcopy(base)),
    }
    opts = {k: torch.optim.SGD(v.parameters(), lr=lr) for k, v in layers.items()}
    x = torch.randn(batch, size)
    y = torch.randn(batch, size)
    times: dict[str, list[float]] = {k: [] for k in layers}
    errors: dict[str, list[float]] = {k: [] for k in layers}
    for step in range(steps + 3):
        for name, layer in layers.items():

            def train_step(name: str = name, layer: nn.Module = layer) -> None:
                opts[name].zero_grad()
                loss = (layer(x) - y).square().mean()
                loss.backward()
                opts[name].step()

            elapsed, _ = timed(train_step)
            if step >= 3:  # warm-up steps excluded
                times[name].append(elapsed)
                errors[name].append(_sigma_error(layer))
    print(f"{_versions()}, Linear({size}, {size}), batch {batch}, SGD lr {lr}, {steps} steps")
    print()
    print("| layer | median step (ms) | ratio | median σ error | max σ error |")
    print("|---|---|---|---|---|")
    ref = statistics.median(times[TORCH])
    for name in layers:
        med = statistics.median(times[name])
        print(
            f"| {name} | {1e3 * med:.2f} | {med / ref:.2f} | "
            f"{statistics.median(errors[name]):.1e} | {max(errors[name]):.1e} |"
        )
    print()


def sedghi_norm(kernel: torch.Tensor, size: tuple[int, int]) -> float:
    """Largest singular value of the circular convolution by ``kernel`` ``(c_out, c_in, k, k)``
    on ``size`` inputs: the largest 2-norm over the frequencies of the c_out × c_in matrices of
    the 2-D DFT of the kernel zero-padded to ``size`` (Sedghi, Gupta & Long, 2019)."""
    padded = kernel.new_zeros((*kernel.shape[:2], *size))
    padded[..., : kernel.shape[2], : kernel.shape[3]] = kernel
    return float(torch.linalg.matrix_norm(torch.fft.fft2(padded).permute(2, 3, 0, 1), 2).max())


def _divided_by(layer: nn.Module, weight: torch.Tensor | None = None) -> float:
    """The σ the layer divides its weight by (it rescales the whole weight by one number).

    With ``weight``, the σ it divided that weight by in the last training step: in evaluation
    mode both parametrizations use the singular vectors stored by that step.
    """
    p = layer.parametrizations.weight  # type: ignore[union-attr]
    with torch.no_grad():
        if weight is None:
            return float(p.original.norm() / layer.weight.norm())
        current = p.original.clone()
        p.original.copy_(weight)
        layer.eval()
        sigma = float(weight.norm() / layer.weight.norm())
        layer.train()
        p.original.copy_(current)
        return sigma


def bench_conv(quick: bool) -> None:
    channels, size = (16, 16) if quick else (64, 32)
    print(
        f"{_versions()}, Conv2d({channels}, {channels}, 3, padding=1) on {channels}×{size}×{size}, "
        "default initialisation (seed 0), float64, tol 1e-4"
    )
    print()
    print(
        "| padding_mode | operator norm (torchsvd) | registration (s) | reshaped kernel "
        "| operator / reshaped | FFT formula | rel. difference |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode in ("zeros", "circular"):
        torch.manual_seed(0)
        conv = nn.Conv2d(channels, channels, 3, padding=1, padding_mode=mode).double()
        kernel = conv.weight.detach().clone()
        t0 = time.perf_counter()
        torchsvd.nn.spectral_norm(conv, input_shape=(channels, size, size), tol=1e-4)
        elapsed = time.perf_counter() - t0
        sigma = _divided_by(conv)
        reshaped = float(torch.linalg.matrix_norm(kernel.flatten(1), 2))
        if mode == "circular":
            fft = sedghi_norm(kernel, (size, size))
            fft_cols = f"{fft:.10f} | {abs(sigma - fft) / fft:.1e}"
        else:
            fft_cols = "– | –"
        print(
            f"| {mode} | {sigma:.10f} | {elapsed:.2f} | {reshaped:.6f} | {sigma / reshaped:.3f} "
            f"| {fft_cols} |"
        )
    print()


# (in channels, out channels, stride, input size) of the CNN's convolutions.
_CNN = ((3, 32, 1, 32), (32, 64, 2, 32), (64, 64, 2, 16))


def small_cnn(ours: bool) -> nn.Sequential:
    """The CNN of the cnn and compile parts, every layer spectrally normalised (seed 0)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for cin, cout, stride, size in _CNN:
        conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        if ours:
            layers.append(torchsvd.nn.spectral_norm(conv, input_shape=(cin, size, size)))
        else:
            layers.append(torch_spectral_norm(conv))
        layers.append(nn.ReLU())
    linear = nn.Linear(64 * 8 * 8, 10)
    linear = torchsvd.nn.spectral_norm(linear) if ours else torch_spectral_norm(linear)
    return nn.Sequential(*layers, nn.Flatten(), linear)


class _PowerReference:
    """The operator norm of a convolution by power iteration in float64 (torch's conv and
    conv_transpose), warm-started from the previous call: a many-iteration reference."""

    def __init__(self, conv: nn.Conv2d, shape: tuple[int, int, int], iterations: int) -> None:
        self.conv, self.iterations = conv, iterations
        self.v = torch.randn(1, *shape, dtype=torch.float64)
        self.first = True

    def __call__(self, weight: torch.Tensor) -> float:
        conv, W = self.conv, weight.double()
        v = self.v / self.v.norm()
        sigma = 0.0
        # From the random start, ten times as many.
        for _ in range(self.iterations * (10 if self.first else 1)):
            Wv = F.conv2d(v, W, None, conv.stride, conv.padding)
            sigma = float(Wv.norm())
            z = torch.nn.grad.conv2d_input(v.shape, W, Wv / sigma, conv.stride, conv.padding)
            v = z / z.norm()
        self.v, self.first = v, False
        return sigma


def bench_cnn(quick: bool, steps: int | None, lr: float) -> None:
    steps = steps or (4 if quick else 30)
    batch = 16 if quick else 64
    nets = {TORCH: small_cnn(False), OURS: small_cnn(True)}
    opts = {k: torch.optim.SGD(v.parameters(), lr=lr, momentum=0.9) for k, v in nets.items()}
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    iterations = 50 if quick else 300
    refs = {
        name: [
            _PowerReference(net[i], (cin, size, size), iterations)
            for i, (cin, _, _, size) in zip((0, 2, 4), _CNN, strict=True)
        ]
        for name, net in nets.items()
    }
    times: dict[str, list[float]] = {k: [] for k in nets}
    errors: dict[str, list[float]] = {k: [] for k in nets}
    norms: dict[str, list[float]] = {k: [] for k in nets}
    reshaped_errors: list[float] = []
    for step in range(steps + 3):
        for name, net in nets.items():

            def train_step(name: str = name, net: nn.Module = net) -> None:
                opts[name].zero_grad()
                F.cross_entropy(net(x), y).backward()
                opts[name].step()

            used_weights = [
                net[i].parametrizations.weight.original.detach().clone()  # type: ignore[union-attr]
                for i in (0, 2, 4)
            ]
            elapsed, _ = timed(train_step)
            if step < 3:  # warm-up steps excluded
                continue
            times[name].append(elapsed)
            # The σ each convolution divided by in this step, against the operator norm of the
            # weights it used.
            for ref, i, W in zip(refs[name], (0, 2, 4), used_weights, strict=True):
                used = _divided_by(net[i], W)
                exact = ref(W)
                errors[name].append(abs(used - exact) / exact)
                norms[name].append(exact / used)
                if name == TORCH:
                    target = float(torch.linalg.matrix_norm(W.double().flatten(1), 2))
                    reshaped_errors.append(abs(used - target) / target)
    print(
        f"{_versions()}, CNN Conv2d(3,32,3,p=1) → Conv2d(32,64,3,s=2,p=1) → "
        f"Conv2d(64,64,3,s=2,p=1) → Linear(4096,10), ReLU, batch {batch} of 3×32×32, SGD lr "
        f"{lr} momentum 0.9, {steps} steps, float32"
    )
    print()
    print(
        "| layers | median step (ms) | ratio | σ rel. error vs operator norm (median / max) "
        "| ‖normalised conv‖₂ (min – max) |"
    )
    print("|---|---|---|---|---|")
    ref_time = statistics.median(times[TORCH])
    for name in nets:
        med = statistics.median(times[name])
        print(
            f"| {name} | {1e3 * med:.1f} | {med / ref_time:.2f} | "
            f"{statistics.median(errors[name]):.1e} / {max(errors[name]):.1e} | "
            f"{min(norms[name]):.4f} – {max(norms[name]):.4f} |"
        )
    print()
    print(
        f"PyTorch's σ against its own target, the reshaped kernel's norm: median "
        f"{statistics.median(reshaped_errors):.1e}, max {max(reshaped_errors):.1e}."
    )
    print()


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its waited-for children (the C++
    compiler that inductor runs): unlike wall time, nearly independent of the machine's load."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _InductorCounts:
    """What inductor compiles: nodes of the post-grad FX graphs (forward, then backward) and
    the C++ kernels it generates, each one a separate compiler run (count, source size)."""

    def __init__(self) -> None:
        self.graph_nodes: list[int] = []
        self.kernels = 0
        self.source_chars = 0

    def __enter__(self) -> _InductorCounts:
        from torch._inductor import config
        from torch._inductor.async_compile import AsyncCompile

        self._config, self._cls = config, AsyncCompile
        self._pass, self._binding = config.post_grad_custom_pre_pass, AsyncCompile.cpp_pybinding
        binding = self._binding

        def count_nodes(graph: torch.fx.Graph) -> None:
            self.graph_nodes.append(len(graph.nodes))

        def counted_binding(compiler: object, argtypes: list[str], source_code: str) -> object:
            self.kernels += 1
            self.source_chars += len(source_code)
            return binding(compiler, argtypes, source_code)

        config.post_grad_custom_pre_pass = count_nodes
        AsyncCompile.cpp_pybinding = counted_binding  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self._config.post_grad_custom_pre_pass = self._pass
        self._cls.cpp_pybinding = self._binding  # type: ignore[method-assign]


def bench_compile(quick: bool, backends: list[str], only: str | None) -> None:
    """Graph breaks, first-step time and CPU time of the compiled CNN, and for inductor what it
    compiled; run each network in a fresh process (``--only``) with
    TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 for compile costs that do not depend on what was
    compiled before."""
    batch = 16 if quick else 64
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    print(f"{_versions()}, the CNN of the cnn part, batch {batch}, forward + backward")
    print()
    print(
        "| layers | backend | graph breaks | graphs | first step (s) | first step CPU (s) "
        "| FX nodes fwd / bwd | C++ kernels (kB source) | later step (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    nets = ((TORCH, False), (OURS, True))
    for backend in backends:
        # Warm-up: the compiler's imports and first-time costs, on a network without either.
        torch._dynamo.reset()
        warm = torch.compile(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), backend=backend)
        warm(x[:2]).sum().backward()
        for name, ours in nets:
            if only is not None and name != {"torch": TORCH, "ours": OURS}[only]:
                continue
            torch._dynamo.reset()
            net = small_cnn(ours)
            explanation = torch._dynamo.explain(net)(x)
            torch._dynamo.reset()
            compiled = torch.compile(net, backend=backend)

            def step(compiled: nn.Module = compiled) -> None:
                F.cross_entropy(compiled(x), y).backward()

            with _InductorCounts() as counts:
                cpu = _cpu_seconds()
                first, _ = timed(step)
                cpu = _cpu_seconds() - cpu
            later = statistics.median(timed(step)[0] for _ in range(3))
            if backend == "inductor":
                nodes = " / ".join(map(str, counts.graph_nodes))
                kernels = f"{counts.kernels} ({counts.source_chars / 1e3:.0f})"
            else:
                nodes = kernels = "–"
            print(
                f"| {name} | {backend} | {explanation.graph_break_count} | "
                f"{explanation.graph_count} | {first:.1f} | {cpu:.1f} | {nodes} | {kernels} "
                f"| {1e3 * later:.1f} |"
            )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument(
        "--part", default="all", choices=("linear", "conv", "cnn", "compile", "all")
    )
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--backends", default="aot_eager,inductor")
    parser.add_argument("--only", choices=("torch", "ours"), help="compile part: one network")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = ("linear", "conv", "cnn", "compile") if args.part == "all" else (args.part,)
    if "linear" in parts:
        bench_linear(args.quick, args.steps, args.lr or 1e-3)
    if "conv" in parts:
        bench_conv(args.quick)
    if "cnn" in parts:
        bench_cnn(args.quick, args.steps, args.lr or 1e-2)
    if "compile" in parts:
        bench_compile(args.quick, args.backends.split(","), args.only)


if __name__ == "__main__":
    main()
