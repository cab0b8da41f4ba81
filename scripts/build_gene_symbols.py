"""Build ``drugcell/data/gene_symbols.tsv.gz``: Ensembl gene id -> gene symbol for human genes.

Why a script: the table ships with drugcell so that ``drugcell programs`` names genes offline, and
whoever updates it should get the same bytes from the same source. The source is Bioconductor's
``org.Hs.eg.db`` as Debian packages it (``r-bioc-org.hs.eg.db``, Artistic-2.0; its gene symbols
come from NCBI Gene, whose data are public domain, its Ensembl links from NCBI Gene and Ensembl).
R is not needed: the package is one SQLite file, read here with Python's ``sqlite3``.

    apt-get download r-bioc-org.hs.eg.db          # or pass an installed org.Hs.eg.sqlite
    python scripts/build_gene_symbols.py r-bioc-org.hs.eg.db_3.16.0-1_all.deb

An Ensembl id linked to several NCBI genes (about 1% of ids: read-through transcripts, LOC
predictions) keeps the lowest Entrez id, the longest-established gene (e.g. ENSG00000140650 ->
PMM2, not LOC100130283). The gzip header carries no time stamp, so a rebuild is byte-identical.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sqlite3
import subprocess
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "drugcell" / "data" / "gene_symbols.tsv.gz"
SQLITE_IN_DEB = "usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite"
DEBIAN_PACKAGE = "r-bioc-org.hs.eg.db"

QUERY = """
SELECT e.ensembl_id, CAST(g.gene_id AS INTEGER) AS entrez, i.symbol
FROM ensembl e JOIN genes g ON e._id = g._id JOIN gene_info i ON i._id = e._id
ORDER BY e.ensembl_id, entrez
"""


def _meta(con: sqlite3.Connection) -> dict[str, str]:
    return dict(con.execute("SELECT name, value FROM metadata").fetchall())


def table_text(con: sqlite3.Connection, package_version: str) -> tuple[str, int]:
    """The TSV (header comment lines, then ``ensembl_id<TAB>symbol``) and its row count."""
    meta = _meta(con)
    if meta.get("ORGANISM") != "Homo sapiens":
        raise SystemExit(f"not the human OrgDb: ORGANISM = {meta.get('ORGANISM')!r}")
    best: dict[str, str] = {}
    for ens, _entrez, symbol in con.execute(QUERY):  # ordered by Entrez id within an Ensembl id
        if ens.startswith("ENSG") and ens not in best:
            best[ens] = symbol
    buf = io.StringIO()
    buf.write(f"# Ensembl gene id -> NCBI Gene symbol, Homo sapiens. Built by scripts/build_gene_symbols.py from "
              f"Bioconductor org.Hs.eg.db (Debian {DEBIAN_PACKAGE} {package_version}; NCBI Gene "
              f"{meta.get('EGSOURCEDATE')}, Ensembl {meta.get('ENSOURCEDATE')}).\n")
    buf.write("# org.Hs.eg.db: Copyright 2019 Marc Carlson; Artistic-2.0. This is an extract (two columns, one "
              "row per Ensembl id, the lowest Entrez id where several link), distributed under Artistic-2.0; "
              "the symbols are NCBI Gene data (public domain).\n")
    buf.write("ensembl_id\tsymbol\n")
    for ens in sorted(best):
        buf.write(f"{ens}\t{best[ens]}\n")
    return buf.getvalue(), len(best)


def _sqlite_from(source: Path, tmp: Path) -> Path:
    if source.suffix == ".deb":
        subprocess.run(["dpkg-deb", "-x", str(source), str(tmp)], check=True)
        return tmp / SQLITE_IN_DEB
    return source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help=f"the {DEBIAN_PACKAGE} .deb, or an org.Hs.eg.sqlite file")
    ap.add_argument("--package-version", default=None,
                    help="the Debian package version to record (default: read from the .deb)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    version = args.package_version
    if version is None and args.source.suffix == ".deb":
        version = subprocess.run(["dpkg-deb", "-f", str(args.source), "Version"], check=True,
                                 capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        con = sqlite3.connect(_sqlite_from(args.source, Path(tmp)))
        text, n = table_text(con, version or "unknown")
        con.close()
    data = gzip.compress(text.encode(), compresslevel=9, mtime=0)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_bytes(data)
    tmp_out.replace(args.out)
    print(f"wrote {args.out}: {n:,} Ensembl ids, {len(data):,} bytes")


if __name__ == "__main__":
    main()
