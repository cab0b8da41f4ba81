"""Built-in chemistry for the simulator: scaffold templates, substituents, program keys, controls.

Molecules are assembled as text: a template holds branch slots ``([R1])``, ``([R2])``, ...; a slot
takes a substituent SMILES or disappears (hydrogen). Substituent rings use ring-closure labels
``%91``/``%92`` so they never collide with the template's own labels 1-9. Every product is checked
and canonicalised with RDKit by :func:`enumerate_molecules`; templates here are only raw material.

The lists are hand-written (medicinal-chemistry staples), not taken from any data set. Template
order sets popularity: earlier templates are drawn more often (Zipf), as in real screening
libraries where a few chemotypes dominate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drugcell.data.vcpi import DMSO

#: (name, template). Slots are R1..R3; each template has at least two.
SCAFFOLDS: tuple[tuple[str, str], ...] = (
    ("benzene", "c1cc([R1])ccc1([R2])"),
    ("diaryl_amide", "c1cc([R1])ccc1NC(=O)c1ccc([R2])cc1([R3])"),
    ("pyridine", "c1cc([R1])ncc1([R2])"),
    ("sulfonamide", "c1ccc(S(=O)(=O)Nc2ccc([R1])cc2)cc1([R2])"),
    ("piperazine_aryl", "c1cc([R1])ccc1N1CCN([R2])CC1"),
    ("biphenyl", "c1cc([R1])ccc1-c1ccc([R2])cc1([R3])"),
    ("indole", "c1cc([R1])c2[nH]cc([R2])c2c1"),
    ("quinoline", "c1ccc2ncc([R1])cc2c1([R2])"),
    ("pyrimidine_amine", "c1cc([R1])ccc1Nc1nccc([R2])n1"),
    ("diaryl_urea", "c1cc([R1])ccc1NC(=O)Nc1ccc([R2])cc1([R3])"),
    ("benzimidazole", "c1cc([R1])cc2[nH]c([R2])nc12"),
    ("piperidine_amide", "O=C(c1ccc([R1])cc1)N1CCC([R2])CC1"),
    ("thiazole", "c1nc([R1])sc1([R2])"),
    ("anilinoquinazoline", "c1ccc2ncnc(Nc3ccc([R1])cc3)c2c1([R2])"),
    ("chalcone", "c1cc([R1])ccc1/C=C/C(=O)c1ccc([R2])cc1([R3])"),
    ("thiophene_amide", "c1cc([R1])sc1C(=O)Nc1ccc([R2])cc1"),
    ("benzothiazole", "c1cc([R1])cc2sc([R2])nc12"),
    ("pyrazole", "c1c([R1])[nH]nc1([R2])"),
    ("morpholine_aryl", "c1cc(N2CCOCC2)c([R1])cc1([R2])"),
    ("coumarin", "O=c1oc2ccc([R1])cc2cc1([R2])"),
    ("oxadiazole", "c1([R1])noc(-c2ccc([R2])cc2)n1"),
    ("naphthalene", "c1ccc2cc([R1])ccc2c1([R2])"),
    ("benzoxazole", "c1cc([R1])cc2oc([R2])nc12"),
    ("tetrahydroisoquinoline", "C1Cc2cc([R1])ccc2CN1([R2])"),
    ("cyclohexyl_amide", "O=C(NC1CCC([R1])CC1)c1ccc([R2])cc1"),
    ("furan_amide", "c1cc([R1])oc1C(=O)Nc1cc([R2])ccc1"),
    ("imidazopyridine", "c1cc([R1])n2c([R2])c(-c3ccccc3)nc2c1"),
    ("quinoxaline", "c1cc([R1])c2nc([R2])c([R3])nc2c1"),
    ("indazole", "c1cc([R1])c2[nH]nc([R2])c2c1"),
    ("acrylamide_aryl", "C=CC(=O)Nc1cc([R1])ccc1([R2])"),
    ("aryl_piperidine_ether", "c1cc([R1])ccc1OC1CCN([R2])CC1"),
    ("pyrazine", "c1nc([R1])cnc1([R2])"),
    ("benzofuran", "c1cc([R1])cc2cc([R2])oc12"),
    ("isoxazole", "c1c([R1])noc1-c1ccc([R2])cc1"),
    ("oxindole", "O=C1Nc2ccc([R1])cc2C1([R2])"),
    ("thienopyrimidine", "c1([R1])nc([R2])c2ccsc2n1"),
    ("pyrrolidine_amide", "O=C(c1cc([R1])ccc1)N1CCC([R2])C1"),
    ("benzodioxole", "c1c([R1])c2OCOc2cc1C([R2])"),
    ("tetralin", "C1CCc2cc([R1])ccc2C1([R2])"),
    ("phenothiazine", "c1ccc2c(c1)Sc1ccc([R1])cc1N2CCC([R2])"),
    ("hydantoin", "O=C1NC(=O)N([R1])C1c1ccc([R2])cc1"),
    ("pyridazine", "c1cc([R1])nnc1([R2])"),
    ("triazine", "c1([R1])nc([R2])nc(N)n1"),
    ("purine", "c1([R1])nc([R2])c2nc[nH]c2n1"),
    ("cinnamic_hydroxamate", "ONC(=O)/C=C/c1ccc([R1])cc1([R2])"),
    ("styryl_sulfone", "c1cc([R1])ccc1/C=C/S(=O)(=O)Cc1ccc([R2])cc1"),
    ("nitrofuran", "O=[N+]([O-])c1ccc(/C=N/N([R1])C([R2]))o1"),
    ("naphthoquinone", "O=C1C([R1])=CC(=O)c2cc([R2])ccc21"),
    ("catechol_amide", "Oc1ccc(CCNC(=O)c2ccc([R1])cc2)cc1O"),
    ("steroid", "CC12CCC3C(CCC4CC([R1])CCC34C)C1CCC2([R2])"),
    ("spiro_piperidine", "O=C1NCC2(CCN([R1])CC2)c2cc([R2])ccc21"),
    ("azetidine_amide", "O=C(c1ccc([R1])cc1)N1CC([R2])C1"),
    ("benzylpiperazine", "c1cc([R1])ccc1CN1CCN(C(=O)c2ccc([R2])cc2)CC1"),
    ("aminothiazole_amide", "c1c([R1])sc(NC(=O)c2ccc([R2])cc2)n1"),
    ("imidazole", "c1nc([R1])c(-c2ccc([R2])cc2)[nH]1"),
)

#: Substituents; "" is hydrogen. Rings inside use %91/%92.
SUBSTITUENTS: tuple[str, ...] = (
    "", "C", "F", "Cl", "OC", "C(F)(F)F", "CC", "N(C)C", "C(=O)N", "O",
    "C#N", "Br", "C(C)C", "N%91CCOCC%91", "C(=O)OC", "NC(C)=O", "S(C)(=O)=O", "C1CC1",
    "OCC", "c%91ccccc%91", "N%91CCN(C)CC%91", "C(=O)O", "CO", "OC(F)(F)F", "N",
    "C(=O)NC", "N%91CCCC%91", "c%91ccncc%91", "NC", "C(C)(C)C", "S(N)(=O)=O", "CN%91CCOCC%91",
    "N%91CCCCC%91", "c%91ccc(F)cc%91", "OCc%91ccccc%91", "C(=O)N(C)C", "CCN(C)C", "SC",
    "c%91cccs%91", "C%91CCOCC%91", "NS(C)(=O)=O", "c%91ccc(Cl)cc%91", "C(C)=O", "OC(C)C",
    "[N+](=O)[O-]", "c%91ccco%91", "Nc%91ccccc%91", "C(=O)Nc%91ccccc%91", "C%91CCCCC%91",
    "OCCN(C)C", "CC(=O)O", "N%91CCC(O)CC%91", "c%91cn[nH]c%91", "C(=O)N%91CCCC%91", "I",
    "c%91nccs%91", "CCO", "C(F)F", "NCc%91ccccc%91", "S(=O)(=O)N%91CCOCC%91", "C=O",
    "C(=O)NO", "NC(=O)C=C", "/C=C/C(=O)OC", "c%91ccc(O)c(O)c%91", "CCl",
)

#: Structure keys that switch gene programs on: (name, SMARTS, strength). Strength grades how
#: much a key moves expression (reactive / target-class motifs strong, decoration weak).
PROGRAM_KEYS: tuple[tuple[str, str, float], ...] = (
    ("michael_acceptor", "[CX3]=[CX3][CX3](=O)", 1.6),
    ("hydroxamic_acid", "C(=O)N[OX2H1]", 2.0),
    ("nitro", "[N+](=O)[O-]", 1.0),
    ("aldehyde", "[CX3H1](=O)[#6]", 1.1),
    ("quinone", "[#6]1(=O)[#6]=,:[#6][#6](=O)[#6]=,:[#6]1", 1.8),
    ("catechol", "c([OX2H1])c[OX2H1]", 1.0),
    ("quinazoline_hinge", "c1ncnc2ccccc12", 1.4),
    ("aminopyrimidine", "c1ccnc(N[c])n1", 1.2),
    ("steroid", "C1CCC2C(C1)CCC1C2CCC2CCCC12", 1.5),
    ("phenothiazine", "c1ccc2Sc3ccccc3Nc2c1", 1.2),
    ("styryl_sulfone", "C=CS(=O)(=O)", 1.3),
    ("alkyl_halide", "[CH2][Cl,Br,I]", 0.9),
    ("diaryl_urea", "cNC(=O)Nc", 0.7),
    ("sulfonamide", "S(=O)(=O)N", 0.35),
    ("carboxylic_acid", "C(=O)[OX2H1]", 0.3),
    ("morpholine", "N1CCOCC1", 0.3),
    ("piperazine", "N1CCNCC1", 0.4),
    ("basic_amine", "[NX3;H0,H1;!$(NC=O);!$(N-a);!$(NS=O)]([CX4])[CX4]", 0.45),
    ("aryl_halide", "c[Cl,Br,I]", 0.3),
    ("trifluoromethyl", "C(F)(F)F", 0.3),
    ("indole", "c1ccc2[nH]ccc2c1", 0.6),
    ("thiophene", "c1ccsc1", 0.25),
    ("nitrile", "C#N", 0.25),
    ("biaryl", "c-c", 0.3),
    ("ester", "[#6]C(=O)O[CX4]", 0.25),
    ("phenol", "c[OX2H1]", 0.35),
    ("pyridine", "c1ccncc1", 0.2),
    ("benzimidazole_like", "c1nc2ccccc2[nH,o,s]1", 0.5),
)

#: The vehicle and the four positive controls: canonical id -> (SMILES, spellings used in wells).
#: Ids and order are :data:`drugcell.data.vcpi.CONTROL_IDS`; every spelling must be recognised by
#: :func:`drugcell.data.vcpi.control_id` (tests check both).
CONTROLS: dict[str, tuple[str, tuple[str, ...]]] = {
    DMSO: ("CS(C)=O", (DMSO,)),
    "Staurosporine": (
        "C[C@@]12[C@@H]([C@@H](C[C@@H](O1)N3C4=CC=CC=C4C5=C6C(=C7C8=CC=CC=C8N2C7=C53)CNC6=O)NC)OC",
        ("Staurosporine", "staurosporine", "Staurosporin", "STAUROSPORINE"),
    ),
    "Brefeldin A": (
        "C[C@H]1CCC/C=C/[C@@H]2C[C@H](O)C[C@H]2[C@H](O)/C=C/C(=O)O1",
        ("Brefeldin A", "Brefeldin-A", "brefeldin a", "BrefeldinA"),
    ),
    "Rigosertib": (
        "COc1cc(OC)c(/C=C/S(=O)(=O)Cc2ccc(OC)c(NCC(=O)O)c2)c(OC)c1",
        ("Rigosertib", "rigosertib", "Rigosertib ", "RIGOSERTIB"),
    ),
    "Trichostatin A": (
        "C[C@H](/C=C(\\C)/C=C/C(=O)NO)C(=O)c1ccc(cc1)N(C)C",
        ("Trichostatin A", "trichostatin a", "Trichostatin-A", "Trichostatin  A"),
    ),
}


@dataclass(frozen=True)
class Molecule:
    """One generated molecule: canonical SMILES and the template it was built on."""

    smiles: str
    scaffold_index: int


def fill_template(template: str, substituents: dict[str, str]) -> str:
    """Put substituents into a template's slots; an empty substituent (H) removes the slot."""
    out = template
    for slot in ("R1", "R2", "R3"):
        token = f"([{slot}])"
        if token in out:
            sub = substituents.get(slot, "")
            out = out.replace(token, f"({sub})" if sub else "")
    return out


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Popularity 1/rank^exponent, normalised (rank 1 = first in the list)."""
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return w / w.sum()


def enumerate_molecules(
    n: int,
    rng: np.random.Generator,
    *,
    exclude: set[str] | None = None,
    scaffold_exponent: float = 0.9,
    substituent_exponent: float = 0.6,
    min_heavy_atoms: int = 12,
    max_heavy_atoms: int = 45,
    max_tries_factor: int = 60,
) -> list[Molecule]:
    """Draw ``n`` distinct valid drug-like molecules (canonical SMILES, RDKit-checked).

    Scaffolds and substituents are drawn by Zipf popularity; products outside the heavy-atom
    range, failing to parse, or already seen (canonical SMILES, or in ``exclude``) are redrawn;
    so are tautomers of a molecule already drawn (same InChIKey first block), which the leak audit
    would rightly call the same compound if one landed in training and the other in test.
    """
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    p_scaf = zipf_weights(len(SCAFFOLDS), scaffold_exponent)
    p_sub = zipf_weights(len(SUBSTITUENTS), substituent_exponent)
    seen: set[str] = set(exclude or ())
    out: list[Molecule] = []
    tries = 0
    max_tries = max_tries_factor * max(n, 100)
    cache: dict[str, tuple[str, str] | None] = {}
    seen_keys: set[str] = set()
    while len(out) < n:
        tries += 1
        if tries > max_tries:
            raise RuntimeError(
                f"could only build {len(out)} distinct molecules of {n}; "
                "the built-in library is exhausted: pass a --smiles-file"
            )
        k = int(rng.choice(len(SCAFFOLDS), p=p_scaf))
        subs = {slot: SUBSTITUENTS[int(i)] for slot, i in zip(("R1", "R2", "R3"), rng.choice(len(SUBSTITUENTS), size=3, p=p_sub))}
        raw = fill_template(SCAFFOLDS[k][1], subs)
        if raw in cache:
            hit = cache[raw]
        else:
            mol = Chem.MolFromSmiles(raw)
            hit = None
            if mol is not None and min_heavy_atoms <= mol.GetNumHeavyAtoms() <= max_heavy_atoms:
                hit = (Chem.MolToSmiles(mol), Chem.MolToInchiKey(mol)[:14])
            cache[raw] = hit
        if hit is None or hit[0] in seen or hit[1] in seen_keys:
            continue
        seen.add(hit[0])
        seen_keys.add(hit[1])
        out.append(Molecule(hit[0], k))
    return out

