"""The package as a user meets it: the core imports torch alone; extras name themselves."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# The app's dependencies that torch does not bring itself (torch requires sympy and may import
# numpy and tqdm): none of them may be imported by `import torchsvd` or by the core ops.
APP_MODULES = ("matplotlib", "click", "scipy", "PIL")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_core_imports_no_app_dependency() -> None:
    # Block the app's dependencies at import time, as if the extras were not installed.
    result = _run(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {APP_MODULES!r}:
                    raise ImportError(f"blocked {{name}}", name=name)
        sys.meta_path.insert(0, Block())
        import torch
        before = {{m.split(".")[0] for m in sys.modules}}  # torch itself may import tqdm, sympy
        import torchsvd
        added = {{m.split(".")[0] for m in sys.modules}} - before
        app = sorted(added & {{"sympy", "tqdm", "numpy"}})
        print("added:", app, "cli:", "torchsvd.cli" in sys.modules)
        A = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
        U, S, Vh = torchsvd.svd(A)
        (torchsvd.polar(A).sum() + torchsvd.svds(A, 2)[1].sum() + S.sum()).backward()
        torchsvd.low_rank(A, 2), torchsvd.null_space(A), torchsvd.spectral_norm(A)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {APP_MODULES!r})
        print("loaded:", loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout
    assert "added: [] cli: False" in result.stdout


def test_explain_without_sympy_names_the_extra() -> None:
    # The command line's own message is tested in test_cli.py.
    result = _run(
        """
        import sys
        sys.modules["sympy"] = None  # an absent package: importing it raises ImportError
        import torchsvd
        try:
            torchsvd.explain('1 2; 3 4')
        except ImportError as err:
            print("ImportError:", err)
        """
    )
    assert "pip install 'torchsvd[explain]'" in result.stdout + result.stderr, (
        result.stdout + result.stderr
    )


def test_core_works_without_torch_distributed_tensor() -> None:
    # torch built without distributed support has no DTensor: the DTensor dispatch of svds,
    # spectral_norm and pca must neither import it nor need it for plain tensors.
    result = _run(
        """
        import sys
        import torch
        sys.modules["torch.distributed.tensor"] = None  # importing it raises ImportError
        import torchsvd
        A = torch.randn(70, 65, dtype=torch.float64, requires_grad=True)
        (torchsvd.svds(A, 2)[1].sum() + torchsvd.pca(A, 2)[1].sum()).backward()
        print("ok", float(torchsvd.spectral_norm(A.detach())) > 0)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ok True" in result.stdout
