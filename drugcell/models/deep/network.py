"""The network of the deep models: a Linear-GELU-dropout body and a head.

Why the head is passed in: the body is the same for every deep model, and the head decides what
comes out (a mean, or a mean and a variance) and how it is trained (``heads.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from drugcell.models.deep.heads import Head


class DeepNet(nn.Module):
    """``body`` (hidden layers) then ``head``; ``forward`` returns the head's (mean, var or None)."""

    def __init__(self, in_dim: int, hidden: list[int], dropout: float, make_head: Callable[[int], Head]):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, int(h)), nn.GELU(), nn.Dropout(dropout)]
            d = int(h)
        self.body = nn.Sequential(*layers)
        self.head = make_head(d)  # built after the body: the same initialisation order as ever

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.head(self.body(x))
