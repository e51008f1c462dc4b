"""robustcheck's cost on the four particle taggers of examples/qg_jets, per event and step and
for a whole spec.

For each architecture (ParT-like transformer, EdgeConv, EFN, fused particles + jet features),
trained briefly on synthetic quark/gluon-like jets (128 slots, 30-60 real constituents;
``_particle.jets``) and exported in ``--format`` (module via import path, TorchScript, .pt2 or
ONNX), with ``trim_padding`` off and on:

* ``step``: microseconds per event and PGD step of ``robustcheck.engine.run_attack`` (PGD, 20
  steps, every event takes every step: ``early_stop=False``) against the bare limit of the
  same number of forward + input-gradient passes of the torch model on the same batches
  (``_common.bare_limit``, all 128 slots), and the limit on batches sorted by multiplicity and
  cut to their longest jet (what trimming can reach);
* ``spec``: wall and CPU time of a whole spec over ``--spec-events`` jets: ``pgd``,
  ``constrained_pgd``, a worst-case coherent pT shift (``shift`` on an ``[envelope.parts]``
  group, shared with the jet pT of the fused model), fooling-rate checks on each and a
  resilience check against an alternative sample; the seconds of each attack.

The specs are written into a temporary folder (``--keep DIR`` keeps them). The load is
printed before and after; the machine may be shared.

    python benchmarks/architectures.py --threads 2                       # all, module format
    python benchmarks/architectures.py --arch transformer --format onnx --skip-step
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "qg_jets"
sys.path.insert(0, str(HERE))

import _common as C  # noqa: E402
import _particle as P  # noqa: E402

from robustcheck.attacks.pgd import PGD  # noqa: E402
from robustcheck.core import SpecRun  # noqa: E402
from robustcheck.decision import Decision  # noqa: E402
from robustcheck.engine import default_particle_batch_size, run_attack  # noqa: E402
from robustcheck.padding import PaddingTrim  # noqa: E402
from robustcheck.spec import AttackSpec  # noqa: E402

FORMATS = {"module": None, "torchscript": ".pt", "pt2": ".pt2", "onnx": ".onnx"}
TRAIN_STEPS = {"transformer": 150, "edgeconv": 150, "efn": 300, "fused": 300}


# ------------------------------------------------------------------------------ set-up
def export(model: torch.nn.Module, name: str, fmt: str, folder: Path) -> str:
    """Write the model in ``fmt`` into ``folder``; the spec's [model] lines."""
    if fmt == "module":
        torch.save(model.state_dict(), folder / f"{name}.weights.pt")
        return f'path = "_particle:{name}"\nweights = "{name}.weights.pt"'
    sample = P.jets(16, seed=99)
    names = P.model_inputs(name)
    example = tuple(torch.from_numpy(sample[k]) for k in names)
    target = folder / f"{name}{FORMATS[fmt]}"
    batch, slots = torch.export.Dim("batch", min=2), torch.export.Dim("slots", min=16, max=128)
    dynamic = {"parts": {0: batch, 1: slots}, "mask": {0: batch, 1: slots}}
    if name == "fused":
        dynamic["jet"] = {0: batch}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(model, example), str(target))
        elif fmt == "pt2":
            torch.export.save(torch.export.export(model, example, dynamic_shapes=dynamic), target)
        else:  # torch's default ONNX exporter (dynamo in torch 2.14)
            torch.onnx.export(
                model,
                example,
                str(target),
                input_names=list(names),
                output_names=["logits"],
                dynamic_shapes=dynamic,
            )
    return f'path = "{target.name}"\noutput = 0'


def spec_text(name: str, model_lines: str, events: int, trim: bool) -> str:
    inputs = {k: k for k in P.model_inputs(name)}
    mapping = "{ " + ", ".join(f'{k} = "{v}"' for k, v in inputs.items()) + " }"
    jet_tables = ""
    if name == "fused":
        jet_tables = """
[inputs.jet]
features = ["jet_pt", "jet_mass"]

[envelope.jet]
jet_pt = { relative = 0.02, min = 0.0 }
jet_mass = { relative = 0.04, min = 0.0 }
groups = [{ name = "jes", features = ["jet_pt"], coherent = true, relative = 0.02 }]
"""
    return f"""version = 1

[model]
{model_lines}
scores = "logits"
signal_class = 1
skip_gates = ["auc"]

[data.nominal]
path = "nominal.npz"
labels = "label"
inputs = {mapping}
max_events = {events}

[data.alternative]
path = "alternative.npz"
labels = "label"
inputs = {mapping}
max_events = {events}

[inputs.parts]
features = ["pt", "dy", "dphi", "pid"]
mask = "mask"
trim_padding = {"true" if trim else "false"}

[envelope.parts]
pt = {{ relative = 0.02, min = 0.0 }}
dy = {{ absolute = 0.003 }}
dphi = {{ absolute = 0.003 }}
pid = {{ frozen = true }}
groups = [{{ name = "jes", features = ["pt"], coherent = true, relative = 0.02 }}]
{jet_tables}
[attacks.pgd]
method = "pgd"
epsilon = 1.0
steps = 20
seed = 1

[attacks.hidden]
method = "constrained_pgd"
epsilon = 1.0
steps = 20
seed = 1

[attacks.jes]
method = "shift"
groups = ["jes"]
mode = "worst"
epsilon = 1.0
steps = 10
seed = 1

[[checks]]
type = "fooling_rate"
attack = "pgd"
max = 0.05

[[checks]]
type = "fooling_rate"
attack = "hidden"
max = 0.05

[[checks]]
type = "fooling_rate"
attack = "jes"
max = 0.05

[[checks]]
type = "resilience"
max_auc_change_percent = 3.0
"""


def prepare(folder: Path, archs: list[str], events: int, train_events: int) -> dict:
    """Samples and briefly trained models, written once into ``folder``."""
    shutil.copy(EXAMPLE / "architectures.py", folder / "architectures.py")
    shutil.copy(HERE / "_particle.py", folder / "_particle.py")
    for sample, seed, alternative in (("nominal", 1, False), ("alternative", 2, True)):
        path = folder / f"{sample}.npz"
        if path.exists():  # a kept folder: reuse its samples when they are large enough
            with np.load(path) as data:
                if len(data["label"]) >= events:
                    continue
        np.savez(path, **P.jets(events, seed, alternative))
    training = P.jets(train_events, seed=3)
    models = {}
    for name in archs:
        started = time.perf_counter()
        model = getattr(P, name)()
        trained = folder / f"{name}.trained.pt"
        if trained.exists():  # a kept folder: the same model as before
            model.load_state_dict(torch.load(trained, weights_only=True))
            model.eval()
        else:
            P.fit(model, training, TRAIN_STEPS[name])
            torch.save(model.state_dict(), trained)
            took = time.perf_counter() - started
            print(f"  {name}: trained {TRAIN_STEPS[name]} steps in {took:.0f} s")
        models[name] = model
    return models


def write_spec(folder: Path, name: str, model: torch.nn.Module, fmt: str, events: int, trim: bool):
    model_lines = export(model, name, fmt, folder)
    path = folder / f"{name}.{fmt}.{'trim' if trim else 'full'}.robust.toml"
    path.write_text(spec_text(name, model_lines, events, trim))
    return path


# ------------------------------------------------------------------------------ measurements
def bare_limit_trimmed(model, inputs, labels, steps, batch_size, trim: PaddingTrim) -> None:
    """``_common.bare_limit`` on batches sorted by multiplicity and cut to their longest jet."""
    order = trim.order(inputs, torch.arange(len(labels)))
    for start in range(0, len(labels), batch_size):
        rows = order[start : start + batch_size]
        batch = trim.cut({k: v[rows] for k, v in inputs.items()})
        C.bare_limit(model, batch, "parts", labels[rows], steps, batch_size)


def step_costs(spec_path: Path, model, events: int, steps: int, batch: int, repeats: int):
    """Microseconds per event and step: robustcheck's PGD and the two limits."""
    run = SpecRun.from_path(spec_path, device="cpu")
    inputs, labels = run.inputs("nominal")
    inputs = {k: v[:events] for k, v in inputs.items()}
    labels = labels[:events]
    trim = run._padding_trim(inputs, "nominal")
    spec = AttackSpec("pgd", "pgd", {"epsilon": 1.0, "steps": steps, "seed": 0})
    attack = PGD(spec, seed=0)
    select = torch.ones(len(labels), dtype=torch.bool)
    tagger, envelope = run.tagger, run.envelope
    C.freeze(model)
    names = list(P.model_inputs(model.name))
    ordered = {k: inputs[k] for k in names}
    whole = PaddingTrim.of([("parts", "mask")])

    fns = {
        "robustcheck": lambda: run_attack(
            attack,
            tagger,
            envelope,
            inputs,
            labels,
            Decision(1),
            select,
            batch,
            early_stop=False,
            trim=trim,
        ),
        "limit (128 slots)": lambda: C.bare_limit(model, ordered, "parts", labels, steps, batch),
        "limit (trimmed)": lambda: bare_limit_trimmed(model, ordered, labels, steps, batch, whole),
    }
    cpu: dict[str, list[float]] = {}
    times = C.interleaved(fns, repeats, torch.device("cpu"), warmup=False, cpu=cpu)
    scale = 1e6 / (len(labels) * steps)
    return {
        name: (statistics.median(ts) * scale, statistics.median(cpu[name]) * scale)
        for name, ts in times.items()
    }


def spec_time(spec_path: Path) -> dict:
    """Wall and CPU time of a whole spec, the seconds of each attack and the verdicts."""
    c0, t0 = time.process_time(), time.perf_counter()
    run = SpecRun.from_path(spec_path, device="cpu")
    attack_cpu = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in run.spec.attacks:  # the checks reuse these (same decision)
            c1 = time.process_time()
            run.adversaries(name)
            attack_cpu[name] = time.process_time() - c1
        results = run.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    attacks = {
        key[0]: f"{adv.seconds:.0f} s ({attack_cpu.get(key[0], float('nan')):.0f} s CPU)"
        for key, adv in run.attacks_computed().items()
    }
    verdicts = [
        f"{r.type}{'(' + r.figures.get('attack', '') + ')' if 'attack' in r.figures else ''}: "
        f"{r.summary}"
        for r in results
    ]
    return {"wall": wall, "cpu": cpu, "attacks": attacks, "verdicts": verdicts}


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", choices=P.ARCHITECTURES, default=list(P.ARCHITECTURES))
    ap.add_argument("--format", choices=tuple(FORMATS), default="module")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--step-events", type=int, default=1000, help="jets for the step cost")
    ap.add_argument("--spec-events", type=int, default=10_000, help="jets for the whole spec")
    ap.add_argument("--train-events", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument(
        "--batch-size",
        type=int,
        default=default_particle_batch_size(torch.device("cpu")),
        help="for the step cost (default: robustcheck's for particle inputs on CPU)",
    )
    ap.add_argument("--repeats", type=int, default=2, help="runs of each, no warm-up")
    ap.add_argument("--trim", choices=("off", "on", "both"), default="both")
    ap.add_argument("--skip-step", action="store_true", help="no per-step costs")
    ap.add_argument("--skip-spec", action="store_true", help="no whole-spec times")
    ap.add_argument("--keep", type=Path, help="write the specs and samples here and keep them")
    args = ap.parse_args(argv)

    threads = C.set_threads(args.threads)
    print(f"machine: {C.machine()}; torch.set_num_threads({args.threads}) -> {threads}")
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {C.cpu_pressure()}")
    trims = {"off": [False], "on": [True], "both": [False, True]}[args.trim]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="rc_arch_"))
    folder.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(folder))
    events = max(args.spec_events, args.step_events)
    print(f"samples and models in {folder} ({events:,} nominal + {events:,} alternative jets)")
    models = prepare(folder, args.arch, events, args.train_events)

    for name in args.arch:
        for trim in trims:
            label = f"{name} [{args.format}, trim_padding={'on' if trim else 'off'}]"
            try:
                step_spec = write_spec(
                    folder, name, models[name], args.format, args.step_events, trim
                )
            except Exception as exc:  # an exporter that fails is a result of the benchmark
                print(f"{label}: export failed: {type(exc).__name__}: {str(exc)[:300]}")
                break
            if not args.skip_step:
                try:
                    costs = step_costs(
                        step_spec,
                        models[name],
                        args.step_events,
                        args.steps,
                        args.batch_size,
                        args.repeats,
                    )
                except Exception as exc:
                    print(f"{label}: step cost failed: {type(exc).__name__}: {str(exc)[:400]}")
                else:
                    limit = costs["limit (128 slots)"][0]
                    print(
                        f"{label}: us per event and PGD step ({args.step_events:,} jets, "
                        f"batch {args.batch_size}, {args.steps} steps, no early stop), "
                        f"median of {args.repeats}; wall (cpu)"
                    )
                    for key, (wall, cpu) in costs.items():
                        print(
                            f"    {key:18s} {wall:9.1f} ({cpu:9.1f})   "
                            f"x{wall / limit:.2f} of the 128-slot limit"
                        )
            if not args.skip_spec:
                spec = write_spec(folder, name, models[name], args.format, args.spec_events, trim)
                load = os.getloadavg()[0]
                try:
                    timing = spec_time(spec)
                except Exception as exc:
                    print(f"{label}: spec failed: {type(exc).__name__}: {str(exc)[:400]}")
                    continue
                attacks = ", ".join(f"{k} {v}" for k, v in timing["attacks"].items())
                print(
                    f"{label}: spec over {args.spec_events:,} jets: {timing['wall']:.0f} s wall, "
                    f"{timing['cpu']:.0f} s CPU (load {load:.2f} -> {os.getloadavg()[0]:.2f}); "
                    f"attacks: {attacks}"
                )
                for line in timing["verdicts"]:
                    print(f"    {line}")
            sys.stdout.flush()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"load after: {os.getloadavg()[0]:.2f} (1 min), {C.cpu_pressure()}; max RSS {rss:.0f} MiB"
    )
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
