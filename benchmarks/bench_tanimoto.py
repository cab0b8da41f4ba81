"""All-pairs Tanimoto: drugcell's blockwise matrix product vs RDKit's BulkTanimotoSimilarity.

Usage: python benchmarks/bench_tanimoto.py --n 2000 [--rdkit-rows 500] [--blas-threads 1]

Molecules are real SMILES from the shared data (LINCS pert SMILES + VCPI test compounds); without
them, random 0/1 fingerprints at Morgan-like density are used (and the table says so). RDKit is
timed on the first ``--rdkit-rows`` query rows against all N and extrapolated linearly to N rows
(BulkTanimotoSimilarity is one independent call per query row, so this is exact up to noise).
The same rows are checked for exact equality (float64 result vs RDKit's doubles).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
from rdkit import DataStructs

from drugcell.chem.fingerprints import morgan_bits, rdkit_bitvects, tanimoto
from drugcell.chem.molecules import parse_smiles
from drugcell.paths import shared_data_dir


def load_smiles(n: int) -> list[str] | None:
    """Up to ``n`` real, parseable SMILES from the shared data, or None if it is absent."""
    base = shared_data_dir()
    lincs = base / "lincs_sciplex_compound_smiles" / "lincs_drugs_smiles.csv"
    vcpi = base / "vcpi_contest_public" / "test_compounds.csv"
    if not lincs.exists() and not vcpi.exists():
        return None
    import pandas as pd

    smiles: list[str] = []
    if vcpi.exists():
        smiles += pd.read_csv(vcpi)["smiles"].astype(str).tolist()
    if lincs.exists():
        df = pd.read_csv(lincs, header=None, names=["pert_id", "smiles"], skipinitialspace=True)
        smiles += df["smiles"].astype(str).str.strip().tolist()
    return smiles[: int(n * 1.05) + 50]  # a little spare for parse failures


def random_bits(n: int, n_bits: int, seed: int = 0) -> np.ndarray:
    """Fallback: Bernoulli bits at ~2.5% density (about what 2048-bit ECFP4 of drugs has)."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, n_bits)) < 0.025).astype(np.uint8)


def bitvects_from_bits(bits: np.ndarray) -> list:
    out = []
    for row in bits:
        bv = DataStructs.ExplicitBitVect(bits.shape[1])
        bv.SetBitsFromList(np.flatnonzero(row).tolist())
        out.append(bv)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="N molecules: an N x N Tanimoto matrix")
    ap.add_argument("--rdkit-rows", type=int, default=None,
                    help="query rows timed for RDKit (default min(N, 1000)); extrapolated to N")
    ap.add_argument("--n-bits", type=int, default=2048)
    ap.add_argument("--radius", type=int, default=2)
    ap.add_argument("--block-rows", type=int, default=None, help="drugcell row block (default auto)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="limit BLAS threads (1 = same single core as RDKit)")
    ap.add_argument("--repeat", type=int, default=2, help="drugcell timing: best of this many runs")
    args = ap.parse_args(argv)
    n = args.n
    rdkit_rows = min(n, args.rdkit_rows or 1000)

    t0 = time.perf_counter()
    smiles = load_smiles(n)
    source = "real SMILES (VCPI test + LINCS)"
    if smiles is not None:
        parsed = parse_smiles(smiles, inchikey=False)
        good = [i for i in np.flatnonzero(parsed.ok)][:n]
        if len(good) < n:
            smiles = None
        else:
            mols = [parsed.mols[i] for i in good]
            bits = morgan_bits(mols, radius=args.radius, n_bits=args.n_bits)
            fps = rdkit_bitvects(mols, radius=args.radius, n_bits=args.n_bits)
    if smiles is None:
        source = "random bits at 2.5% density (shared SMILES absent or too few)"
        bits = random_bits(n, args.n_bits)
        fps = bitvects_from_bits(bits)
    t_fp = time.perf_counter() - t0

    if args.blas_threads:  # for the rest of this process
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=args.blas_threads)
        try:
            import torch
            torch.set_num_threads(args.blas_threads)
        except ImportError:
            pass

    cuda = False
    if args.device != "cpu":  # pay torch's import before timing (the CUDA check needs it)
        import torch
        cuda = torch.cuda.is_available()
    ours: dict[str, float] = {}
    methods = ["auto"] if cuda else ["int8", "float32"]
    for method in methods:
        if method == "int8":
            from drugcell.chem.fingerprints import _int8_gemm_works
            if not _int8_gemm_works():
                continue
        times = []
        for _ in range(max(1, args.repeat)):
            t = time.perf_counter()
            tanimoto(bits, bits, block_rows=args.block_rows, device=args.device, method=method)
            times.append(time.perf_counter() - t)
        ours[method] = min(times)

    t = time.perf_counter()
    ref = np.array([DataStructs.BulkTanimotoSimilarity(f, fps) for f in fps[:rdkit_rows]])
    t_rd_rows = time.perf_counter() - t
    t_rd = t_rd_rows * n / rdkit_rows

    exact64 = np.array_equal(
        tanimoto(bits[:rdkit_rows], bits, device=args.device, dtype=np.float64), ref)
    # Every timed method is checked against RDKit on the timed rows.
    exact32 = all(np.array_equal(tanimoto(bits[:rdkit_rows], bits, device=args.device, method=m),
                                 ref.astype(np.float32)) for m in ours)

    pairs = n * n
    extrap = "" if rdkit_rows == n else f" (timed {rdkit_rows:,} rows, x{n / rdkit_rows:.1f})"
    threads = args.blas_threads or os.cpu_count()
    print(f"## All-pairs Tanimoto, N = {n:,} ({pairs:,} pairs, {args.n_bits}-bit Morgan r={args.radius})")
    print()
    print(f"Molecules: {source}; fingerprinting took {t_fp:.1f} s (not timed below). "
          f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"BLAS threads {threads}; device {args.device}.")
    print()
    print("| method | time (s) | Mpairs/s | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| RDKit BulkTanimotoSimilarity (1 core){extrap} | {t_rd:.2f} | {pairs / t_rd / 1e6:.1f} | 1.0x |")
    labels = {"int8": "int8 GEMM (torch._int_mm), the CPU default",
              "float32": "float32 GEMM (numpy BLAS), the fallback", "auto": "CUDA float32 GEMM"}
    for method, t_ours in ours.items():
        print(f"| drugcell tanimoto, {labels[method]}, best of {args.repeat} | {t_ours:.2f} | "
              f"{pairs / t_ours / 1e6:.1f} | {t_rd / t_ours:.1f}x |")
    print()
    print(f"Exact vs RDKit on {rdkit_rows:,} x {n:,} pairs: float64 identical: {exact64}; "
          f"float32 identical to float32(RDKit): {exact32}.")
    return 0 if (exact64 and exact32) else 1


if __name__ == "__main__":
    sys.exit(main())
