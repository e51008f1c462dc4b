"""Generate quark and gluon jets with PYTHIA 8 and FastJet (the EnergyFlow q/g recipe).

Z(-> nu nu) + jet at sqrt(s) = 14 TeV. Quark jets come from ``qg -> Z q`` and gluon jets from
``q qbar -> Z g`` (PYTHIA's ``WeakBosonAndParton:qg2gmZq`` and ``qqbar2gmZg``, Z only, decaying
to neutrinos), each process run on its own so the classes are balanced and the label is the
flavour of the outgoing hard parton. Every visible final-state particle is clustered with
anti-kT, R = 0.4; the hardest jet of the event is kept when 500 <= pT <= 550 GeV and |y| < 1.7.

Each jet is stored as its leading ``--pad`` constituents (pT in GeV, rapidity and azimuth
relative to the jet axis, PDG id), zero-padded, with a mask (1 real, 0 padding), its kinematics
(pt, y, phi, mass, the full constituent count) and its label: 1 quark (the signal), 0 gluon.

Two generator setups: ``nominal`` (PYTHIA 8 defaults, the Monash 2013 tune) and ``alternative``
(see ALTERNATIVE below and the README), which stands in for a second generator.

    python generate.py                                 # out/samples/{nominal,alternative}.npz
    python generate.py --nominal 500 --alternative 500 --out data   # the committed test sample

Work is split into chunks of jets, each with its own PYTHIA seed derived from ``--seed``, and
the chunks run on ``--workers`` processes: the same seed gives the same sample on any number of
workers.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ENERGY = 14000.0
JET_R = 0.4
PT_RANGE = (500.0, 550.0)
MAX_RAPIDITY = 1.7
PT_HAT_MIN = 450.0  # 15% of events then have a leading jet in the pT and y window
PAD = 128  # none of 9,500 jets has more than 117 constituents (means: quark 34, gluon 54)
QUARK, GLUON = 1, 0
PROCESSES = {QUARK: "WeakBosonAndParton:qg2gmZq", GLUON: "WeakBosonAndParton:qqbar2gmZg"}

COMMON = [
    f"Beams:eCM = {ENERGY}",
    "WeakZ0:gmZmode = 2",  # Z only, no photon
    "23:onMode = off",
    "23:onIfAny = 12 14 16",  # Z -> nu nu: nothing visible recoils against the jet
    f"PhaseSpace:pTHatMin = {PT_HAT_MIN}",
    "Print:quiet = on",
]

# The stand-in for a second generator: PYTHIA's previous default e+e- tune (Hoeth 2009: Lund
# string a = 0.3, b = 0.8, sigma_pT = 0.304 GeV, shower cutoff 0.4 GeV; Monash has 0.68, 0.98,
# 0.335, 0.5) for a different LEP-compatible hadronisation, and a final-state shower alphaS(mZ)
# lowered from Monash's 0.1365 to 0.120 (about the factor-2 renormalisation-scale variation of
# shower uncertainties), which gives jets fewer, harder constituents. See the README.
ALTERNATIVE = ["Tune:ee = 3", "TimeShower:alphaSvalue = 0.120"]
SAMPLES = {"nominal": [], "alternative": ALTERNATIVE}


@dataclass(frozen=True)
class Chunk:
    """A piece of work: ``n_jets`` jets of one class and sample, with its own seed."""

    sample: str
    label: int
    n_jets: int
    seed: int
    number: int
    pad: int


def settings(sample: str, label: int, seed: int) -> list[str]:
    """Every PYTHIA setting of one chunk, in the order they are read."""
    return [
        *COMMON,
        f"{PROCESSES[label]} = on",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        *SAMPLES[sample],
    ]


def rapidity(e: np.ndarray, pz: np.ndarray) -> np.ndarray:
    return 0.5 * np.log(np.maximum(e + pz, 1e-12) / np.maximum(e - pz, 1e-12))


def wrap(phi: np.ndarray) -> np.ndarray:
    """Azimuth differences into [-pi, pi)."""
    return (phi + np.pi) % (2 * np.pi) - np.pi


def leading_jets(batch: object, pad: int) -> dict[str, np.ndarray]:
    """Cluster one batch of PYTHIA events; the leading jets inside the window, as arrays."""
    import awkward as ak
    import fastjet

    prt = batch.prt  # type: ignore[attr-defined]
    pid = abs(prt.id)
    visible = (prt.status > 0) & (pid != 12) & (pid != 14) & (pid != 16)
    prt = prt[visible]
    particles = ak.zip(
        {"px": prt.p.px, "py": prt.p.py, "pz": prt.p.pz, "E": prt.p.e}, with_name="Momentum4D"
    )
    sequence = fastjet.ClusterSequence(
        particles, fastjet.JetDefinition(fastjet.antikt_algorithm, JET_R)
    )
    min_pt = PT_RANGE[0] - 1.0  # a leading jet below the window is rejected anyway
    jets = sequence.inclusive_jets(min_pt=min_pt)
    members = sequence.constituent_index(min_pt=min_pt)
    jet_pt = np.hypot(jets.px, jets.py)
    lead = ak.argmax(jet_pt, axis=1, keepdims=True)
    has_jet = ak.num(jets) > 0
    jets, members, prt = (
        ak.firsts(jets[lead])[has_jet],
        ak.firsts(members[lead])[has_jet],
        prt[has_jet],
    )
    px, py, pz, e = (ak.to_numpy(ak.fill_none(jets[k], 0.0)) for k in ("px", "py", "pz", "E"))
    pt, y, phi = np.hypot(px, py), rapidity(e, pz), np.arctan2(py, px)
    keep = (pt >= PT_RANGE[0]) & (pt <= PT_RANGE[1]) & (np.abs(y) < MAX_RAPIDITY)
    if not keep.any():
        return {}
    members, prt = members[keep], prt[keep]
    pt, y, phi, px, py, pz, e = (a[keep] for a in (pt, y, phi, px, py, pz, e))
    const = prt[members]
    c_pt = np.hypot(const.p.px, const.p.py)
    order = ak.argsort(c_pt, axis=1, ascending=False)
    const, c_pt = const[order], c_pt[order]
    c_y = rapidity(const.p.e, const.p.pz)
    c_phi = np.arctan2(const.p.py, const.p.px)
    n_const = ak.to_numpy(ak.num(const))

    def padded(values: object) -> np.ndarray:
        return ak.to_numpy(ak.fill_none(ak.pad_none(values, pad, clip=True), 0.0)).astype(
            np.float32
        )

    mask = padded(ak.ones_like(c_pt))
    parts = np.stack(
        [
            padded(c_pt),
            padded(c_y - y) * mask,
            wrap(padded(c_phi - phi)) * mask,
            padded(const.id),
        ],
        axis=-1,
    ).astype(np.float32)
    return {
        "parts": parts,
        "mask": mask,
        "jet_pt": pt.astype(np.float32),
        "jet_y": y.astype(np.float32),
        "jet_phi": phi.astype(np.float32),
        "jet_mass": np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0)).astype(np.float32),
        "n_const": n_const.astype(np.int64),
    }


def run_chunk(chunk: Chunk) -> tuple[Chunk, dict[str, np.ndarray], float, int]:
    """Generate one chunk: its arrays, the CPU seconds it took and the events it needed."""
    import pythia8mc

    started = time.process_time()
    pythia = pythia8mc.Pythia("", False)
    for line in settings(chunk.sample, chunk.label, chunk.seed):
        if not pythia.readString(line):
            raise RuntimeError(f"PYTHIA refused the setting {line!r}")
    if not pythia.init():
        raise RuntimeError(f"PYTHIA failed to initialise chunk {chunk}")
    parts: list[dict[str, np.ndarray]] = []
    found, events = 0, 0
    while found < chunk.n_jets:
        batch = pythia.nextBatch(min(200, max(20, 8 * (chunk.n_jets - found))), "skip")
        events += len(batch)
        jets = leading_jets(batch, chunk.pad)
        if jets:
            parts.append(jets)
            found += len(jets["jet_pt"])
    arrays = {k: np.concatenate([p[k] for p in parts])[: chunk.n_jets] for k in parts[0]}
    arrays["label"] = np.full(chunk.n_jets, chunk.label, dtype=np.int64)
    return chunk, arrays, time.process_time() - started, events


def plan(samples: dict[str, int], seed: int, chunk_size: int, pad: int) -> list[Chunk]:
    """Chunks of at most ``chunk_size`` jets, half quark and half gluon per sample."""
    chunks: list[Chunk] = []
    for sample, n_jets in samples.items():
        for label in (QUARK, GLUON):
            todo = n_jets // 2 if label == QUARK else n_jets - n_jets // 2
            while todo > 0:
                size = min(chunk_size, todo)
                number = len(chunks)
                chunks.append(Chunk(sample, label, size, seed * 10_000 + number + 1, number, pad))
                todo -= size
    return chunks


class Progress:
    """Jets done out of ``total``, advanced per finished chunk: a tqdm bar on a terminal, else
    (a batch job's log) a line per chunk with the rate and the time left."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started = time.perf_counter()
        self.bar: Any = None  # a tqdm bar on a terminal
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="jet", desc="generating", file=sys.stderr)

    def add(self, jets: int) -> None:
        self.done += jets
        if self.bar is not None:
            self.bar.update(jets)
        else:
            print(self.line(time.perf_counter() - self.started), file=sys.stderr, flush=True)

    def line(self, seconds: float) -> str:
        rate = self.done / seconds if seconds > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (
            f"generated {self.done}/{self.total} jets ({100 * self.done / self.total:.0f}%) in "
            f"{seconds:.0f} s, {rate:.1f} jets/s, about {left / 60:.1f} min left"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def generate(
    samples: dict[str, int],
    out: Path,
    *,
    seed: int = 1,
    workers: int = 2,
    chunk_size: int = 500,
    pad: int = PAD,
    verbose: bool = True,
) -> dict[str, Path]:
    """Generate the samples and write ``out/<sample>.npz``; returns the files written."""
    chunks = plan(samples, seed, chunk_size, pad)
    results: dict[int, dict[str, np.ndarray]] = {}
    started, cpu_seconds, events = time.perf_counter(), 0.0, 0
    progress = Progress(sum(samples.values())) if verbose else None
    outcomes = []
    parallel = workers > 1 and len(chunks) > 1
    with multiprocessing.get_context("fork").Pool(workers) if parallel else nullcontext() as pool:
        finished = (
            map(run_chunk, chunks) if pool is None else pool.imap_unordered(run_chunk, chunks)
        )
        for outcome in finished:
            outcomes.append(outcome)
            if progress is not None:
                progress.add(outcome[0].n_jets)
    if progress is not None:
        progress.close()
    for chunk, arrays, seconds, n_events in outcomes:
        results[chunk.number] = arrays
        cpu_seconds += seconds
        events += n_events
    wall = time.perf_counter() - started
    n_total = sum(samples.values())
    if verbose:
        print(
            f"{n_total} jets from {events} events in {wall:.0f} s on {workers} worker(s): "
            f"{n_total / cpu_seconds:.1f} jets/s per core, {n_total / wall:.1f} jets/s in all"
        )
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for sample in samples:
        mine = [results[c.number] for c in chunks if c.sample == sample]
        arrays = {k: np.concatenate([m[k] for m in mine]) for k in mine[0]}
        arrays["settings"] = np.array([*COMMON, *SAMPLES[sample]])
        path = out / f"{sample}.npz"
        np.savez_compressed(path, **arrays)
        written[sample] = path
        if verbose:
            truncated = int((arrays["n_const"] > pad).sum())
            print(f"wrote {path} ({len(arrays['label'])} jets, {truncated} truncated to {pad})")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nominal", type=int, default=7000, help="jets in the nominal sample")
    parser.add_argument(
        "--alternative", type=int, default=2500, help="jets in the alternative sample"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--pad", type=int, default=PAD, help="constituents kept per jet")
    args = parser.parse_args(argv)
    generate(
        {"nominal": args.nominal, "alternative": args.alternative},
        args.out,
        seed=args.seed,
        workers=args.workers,
        chunk_size=args.chunk_size,
        pad=args.pad,
    )


if __name__ == "__main__":
    main()
