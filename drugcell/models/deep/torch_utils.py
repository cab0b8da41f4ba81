"""Torch plumbing shared by the deep predictors: device, seeding, determinism, AMP, state dicts.

Why one module: every deep model must behave the same way on the lead's 2-core CPU (bit-identical
for a seed) and on a GPU when one is present (CUDA + bf16 autocast), and must store its weights
as plain numpy arrays so `drugcell.persistence` never needs pickle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def select_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (dropout, init) and return a CPU generator for batch order."""
    torch.manual_seed(int(seed))
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(int(seed))
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen


@contextlib.contextmanager
def deterministic(enabled: bool = True, device: torch.device | None = None) -> Iterator[None]:
    """Run the block with deterministic torch algorithms on CUDA, restoring the previous setting.

    On the CPU the kernels these models use (linear, GELU, dropout, AdamW) are deterministic for
    a fixed seed and thread count (pinned by a test), and ``use_deterministic_algorithms`` would
    import torch's compiler stack (~10 s per process), so it is only switched on for CUDA, where
    it forces cuBLAS/cuDNN into their reproducible modes.
    """
    if not enabled or device is None or device.type != "cuda":
        yield
        return
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads (0: leave torch's setting), then restore.

    Why the deep models default to 1: their batches are small (256 x ~2,000 inputs), and on a
    2-core machine that other processes share, two OpenMP threads wait on each other at every
    barrier: measured 20 ms per training step with one thread against 70-500 ms with two under
    load (about 12 ms with two on an idle machine). One thread is never far from the best and
    never collapses.
    """
    if not n:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (halves memory traffic on tensor cores); a no-op on the CPU,
    where bf16 matmuls are slower than float32 on most machines and would break determinism
    across CPUs."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def module_to_numpy(module: torch.nn.Module, prefix: str) -> dict[str, np.ndarray]:
    """A module's state dict as float32 numpy arrays under ``prefix`` (for get_state)."""
    return {
        f"{prefix}{name}": t.detach().to("cpu", torch.float32).numpy().copy()
        for name, t in module.state_dict().items()
    }


def numpy_to_module(module: torch.nn.Module, state: dict[str, np.ndarray], prefix: str) -> None:
    """Load arrays written by :func:`module_to_numpy` back into ``module`` (strict)."""
    own = module.state_dict()
    loaded = {}
    for name, ref in own.items():
        key = f"{prefix}{name}"
        if key not in state:
            raise KeyError(f"state is missing {key!r}; was it saved by this model version?")
        loaded[name] = torch.as_tensor(np.asarray(state[key]), dtype=ref.dtype)
    module.load_state_dict(loaded, strict=True)


def to_tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """float32 tensor on ``device`` (no copy on the CPU when already float32 and contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)
