"""The contest loss of a batch of training compounds under their own Mejia weights.

``loss_weighting = "compound"``: the coefficient means ``mu`` (n, k) of the deep models are fitted
to ``sum_g W[g,c] (centre + mu @ L - y_c)_g^2``, the contest loss of each training compound under
its own weights, instead of the unweighted MSE of the coefficients (``"gene"``, where the only
weighting is the basis' per-gene scale s_g^2, the *mean* weight of each gene).

Why in gene space and not k-space: in coefficient space the loss of compound c is exactly
``mu' M_c mu - 2 mu' t_c + const`` with ``M_c = L diag(W[:, c]) L'`` (k x k) and
``t_c = L (W[:, c] * (y_c - centre))``. ``M_c`` costs k^2 floats per compound (0.9 GB at 14k
compounds, k = 128), and both cheap stand-ins measured badly on the simulated set (small
preset, 3 scaffold folds): keeping ``t_c`` and only the diagonal of ``M_c`` overshoots
(per-compound optimum ``t/d``: in-sample wMSE 3.7 against 0.07 for the plain projection; CV
wMSE of mlp 0.519 against 0.500 unweighted), and keeping ``t_c`` with the mean ``M_c`` has the
same variance problem (ridge 0.58 against 0.48). The cross-talk between coefficients under one
compound's weights is most of the story: Mejia weights sit on the genes where the compound
responds, and so does its residual. So the loss is computed as it is scored, through the
decoder: ``(B, k) @ (k, G)`` forward and back plus a gather of the batch's rows of Y and W.
Cost at the real size (14k compounds, G = 13k, k = 128, B = 256, one thread on a shared 2-core
box): about 100 ms per training step against 26-29 ms for the unweighted loss, i.e. roughly 3.5x
the CPU training time; memory: one extra (n, G) float32 table (W transposed, 0.7 GB). On a GPU
the extra cost is small.

``n_genes`` > 0 makes it cheaper: each training step scores an importance sample of that many
genes (with replacement, probability proportional to the gene's mean weight over the training
compounds, each sampled term divided by ``n_genes * p_g``), an unbiased estimate of the full sum;
validation always scores every gene. It saves less than the gene count suggests (2048 of 13k
genes: about 72 ms per step; the row gathers remain) and costs some accuracy (simulated set: 256
of 1,349 genes, mlp CV wMSE +0.004), so the default is every gene.

Scale: the loss is multiplied by G / k (G * W has mean 1 per compound) and measured in units of
the coefficient standardisation, so it is comparable to the unweighted per-coefficient MSE
(under ``W[:, c] = s^2 / G`` for every c the two coincide on the basis part) and the mean-variance
head can add it to its NLL without re-tuning the learning rate.
"""

from __future__ import annotations

import numpy as np
import torch

from drugcell.models.deep.lowrank import ResidualBasis


class CompoundWeightedLoss:
    """``loss(mu, rows)``: G/k * mean over rows of sum_g W[g, row] (mu @ L - r[row])_g^2.

    ``r = (y - centre) / z_scale`` is formed per batch from the training profiles (held without a
    copy); ``W``, the weights of the training rows, is held once as an (n, G) float32 table so a
    batch is one row gather (the trainer's targets only carry the row index). Not a module:
    nothing of it is saved with the network, and the predictor drops it after training.
    """

    def __init__(self, Y: np.ndarray, weights_gc: np.ndarray, basis: ResidualBasis, z_scale: float,
                 n_genes: int = 0, chunk: int = 2048):
        n, G = Y.shape
        if weights_gc.shape != (G, n) or basis.mean.shape != (G,):
            raise ValueError(f"weights must be genes x compounds {(G, n)}, got {weights_gc.shape}")
        w = np.empty((n, G), np.float32)
        for a in range(0, n, chunk):  # chunked: no float64 or second transposed copy of (n, G)
            w[a:a + chunk] = np.asarray(weights_gc[:, a:a + chunk], np.float32).T
        self.Y = torch.from_numpy(np.ascontiguousarray(Y, np.float32))
        self.weights = torch.from_numpy(w)
        self.center = torch.from_numpy(np.asarray(basis.mean, np.float32))
        self.decoder = torch.from_numpy(np.ascontiguousarray(basis.loadings, np.float32))
        self.z_scale = float(z_scale)
        self.factor = G / basis.rank
        self.n_genes = int(n_genes) if 0 < int(n_genes) < G else 0
        p = self.weights.mean(dim=0, dtype=torch.float64)
        p = torch.clamp(p, min=1e-3 * float(p.mean()))
        self.gene_p = (p / p.sum()).float()

    def _on(self, device: torch.device) -> None:
        if self.decoder.device != device:
            for name in ("Y", "weights", "center", "decoder", "gene_p"):
                setattr(self, name, getattr(self, name).to(device))

    def __call__(self, mu: torch.Tensor, rows: torch.Tensor, *, sample: bool = False,
                 chunk: int = 1024) -> torch.Tensor:
        """The loss of the coefficient means ``mu`` (B, k) of training rows ``rows`` (B,)."""
        self._on(mu.device)
        rows = rows.to(mu.device).long()
        genes = None
        if sample and self.n_genes:  # unbiased: each drawn gene's term over n_genes * p_g
            genes = torch.multinomial(self.gene_p, self.n_genes, replacement=True)
            decoder, center = self.decoder[:, genes], self.center[genes]
            inv_p = 1.0 / (self.n_genes * self.gene_p[genes])
        else:
            decoder, center = self.decoder, self.center
        total = mu.new_zeros(())
        for a in range(0, len(rows), chunk):  # chunks bound the (rows, G) temporaries (validation)
            r, w = self.Y[rows[a:a + chunk]], self.weights[rows[a:a + chunk]]
            if genes is not None:
                r, w = r[:, genes], w[:, genes] * inv_p
            err = mu[a:a + chunk] @ decoder - (r - center) / self.z_scale
            total = total + torch.sum(w * err * err)
        return total * (self.factor / max(len(rows), 1))
