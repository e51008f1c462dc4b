"""The ONNX gradient bridge's options, measured on today's exports of four particle taggers.

Builds the four architectures of ``examples/qg_jets/architectures.py`` (their default sizes),
exports each with both of torch's ONNX exporters (legacy ``dynamo=False`` and ``dynamo=True``)
at the opsets asked for, and for each export and each option records whether it gives a torch
module, whether that module's scores match onnxruntime (1e-4) and its input gradients match
the torch model's own (relative 1e-3, every entry finite), the conversion time and the time
of a forward + input-gradient pass on a batch.

Options:
- ``onnx2torch``: onnx2torch 1.5.15 as it is (the ONNX graph at its own opset);
- ``rewrite+onnx2torch``: onnxscript's optimizer (constant folding, shape inference) and
  onnx's version converter to opset 18, then onnx2torch;
- ``interpreter``: robustcheck's own interpreter (robustcheck.taggers.onnx_graph).

Run: ``PYTHONPATH=$PWD python3 benchmarks/onnx_bridge.py --threads 1 [--opsets 17 18 ...]``.
A failure is printed with its first line; a missing optional package says SKIPPED.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURES = ROOT / "examples" / "qg_jets" / "architectures.py"
PARTICLES = 32


def architectures() -> Any:
    spec = importlib.util.spec_from_file_location("qg_architectures", ARCHITECTURES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jets(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Padded jets of 8 to 32 particles (pt, y, phi relative to the axis) and 2 jet features."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(8, PARTICLES + 1, n)
    real = np.arange(PARTICLES)[None, :] < counts[:, None]
    pt = -np.sort(-rng.exponential(20.0, (n, PARTICLES)), axis=1)
    coords = rng.normal(0.0, 0.2, (n, PARTICLES, 2))
    parts = np.concatenate([pt[..., None], coords], axis=-1) * real[..., None]
    jet = np.stack([pt.sum(1), rng.uniform(5, 50, n)], axis=1)
    return {
        "parts": parts.astype(np.float32),
        "mask": real.astype(np.float32),
        "jet": jet.astype(np.float32),
    }


def export(
    model: Any, names: list[str], example: tuple[Any, ...], path: Path, dynamo: bool, opset: int
) -> str | None:
    """Export; the first line of the error when the exporter fails."""
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            if dynamo:
                batch = torch.export.Dim("batch")
                torch.onnx.export(
                    model,
                    example,
                    str(path),
                    input_names=names,
                    dynamo=True,
                    opset_version=opset,
                    dynamic_shapes={n: {0: batch} for n in names},
                )
            else:
                torch.onnx.export(
                    model,
                    example,
                    str(path),
                    input_names=names,
                    dynamo=False,
                    opset_version=opset,
                    dynamic_axes={n: {0: "batch"} for n in names},
                )
    except Exception as exc:
        return str(exc).strip().splitlines()[0][:120]
    return None


def onnx2torch_plain(path: Path) -> torch.nn.Module:
    import onnx
    from onnx2torch import convert

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(onnx.load(str(path)))


def onnx2torch_rewritten(path: Path) -> torch.nn.Module:
    import onnx
    import onnxscript.optimizer
    from onnx2torch import convert

    model = onnxscript.optimizer.optimize(onnx.load(str(path)))
    model = onnx.shape_inference.infer_shapes(model)
    model = onnx.version_converter.convert_version(model, 18)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(model)


def interpreter(path: Path) -> torch.nn.Module:
    import onnx

    from robustcheck.taggers.onnx_graph import OnnxGraph

    return OnnxGraph(onnx.load(str(path)))


OPTIONS: dict[str, Callable[[Path], torch.nn.Module]] = {
    "onnx2torch": onnx2torch_plain,
    "rewrite+onnx2torch": onnx2torch_rewritten,
    "interpreter": interpreter,
}


def input_gradients(module: Callable[..., Any], inputs: list[torch.Tensor]) -> torch.Tensor:
    leaves = [x.clone().requires_grad_(i == 0) for i, x in enumerate(inputs)]
    out = module(*leaves)
    out = out[0] if isinstance(out, (tuple, list)) else out
    (grad,) = torch.autograd.grad(torch.log_softmax(out, dim=1)[:, 0].sum(), [leaves[0]])
    return grad


def check(
    path: Path,
    option: str,
    reference: Any,
    inputs: list[torch.Tensor],
    session: Any,
    names: list[str],
    repeats: int,
) -> tuple[str, float | None, float | None]:
    """(outcome, conversion seconds, forward + gradient seconds)."""
    start = time.perf_counter()
    try:
        module = OPTIONS[option](path)
    except ImportError as exc:
        return f"SKIPPED ({exc.name})", None, None
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no conversion: {text[:110]}", None, None
    convert_s = time.perf_counter() - start
    try:
        with torch.no_grad():
            ours = module(*inputs)
        ours = ours[0] if isinstance(ours, (tuple, list)) else ours
        theirs = session.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})[0]
        if not np.allclose(ours.numpy(), theirs, atol=1e-4, rtol=1e-3, equal_nan=True):
            diff = np.nanmax(np.abs(ours.numpy() - theirs))
            return f"scores differ from onnxruntime by {diff:.3g}", convert_s, None
        grad = input_gradients(module, inputs)
        truth = input_gradients(reference, inputs)
        if not bool(torch.isfinite(grad).all()):
            bad = int((~torch.isfinite(grad)).sum())
            return f"{bad} NaN/inf input gradients", convert_s, None
        error = float((grad - truth).abs().max() / truth.abs().max().clamp(min=1e-30))
        if error > 1e-3:
            return f"input gradients off by {error:.2g} (relative)", convert_s, None
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            input_gradients(module, inputs)
            times.append(time.perf_counter() - t)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"fails when run: {text[:110]}", convert_s, None
    return "ok", convert_s, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--opsets", type=int, nargs="+", default=[18])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--options", nargs="+", default=list(OPTIONS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    arch = architectures()
    data = jets(args.batch)
    print(
        f"torch {torch.__version__}, threads {args.threads}, batch {args.batch}, load "
        f"{os.getloadavg()[0]:.2f}"
    )
    summary: dict[str, list[int]] = {option: [0, 0] for option in args.options}
    with tempfile.TemporaryDirectory() as tmp:
        for name in arch.ARCHITECTURES:
            model = arch.build(name).eval()
            names = ["parts", "mask", "jet"] if name == "fused" else ["parts", "mask"]
            inputs = [torch.from_numpy(data[n]) for n in names]
            example = tuple(x[:8] for x in inputs)
            for exporter in ("legacy", "dynamo"):
                for opset in args.opsets:
                    path = Path(tmp) / f"{name}_{exporter}{opset}.onnx"
                    failed = export(model, names, example, path, exporter == "dynamo", opset)
                    label = f"{name:12s} {exporter:6s} opset {opset}"
                    if failed:
                        print(f"{label}  export failed: {failed}")
                        continue
                    try:
                        session = onnxruntime.InferenceSession(
                            str(path), providers=["CPUExecutionProvider"]
                        )
                    except Exception as exc:
                        print(f"{label}  onnxruntime refuses the export: {str(exc)[:100]}")
                        continue
                    for option in args.options:
                        outcome, convert_s, run_s = check(
                            path, option, model, inputs, session, names, args.repeats
                        )
                        summary[option][1] += 1
                        summary[option][0] += outcome == "ok"
                        times = (
                            f"convert {convert_s * 1e3:7.1f} ms" if convert_s is not None else ""
                        ) + (f", fwd+grad {run_s * 1e3:7.1f} ms" if run_s is not None else "")
                        print(f"{label}  {option:19s} {outcome:50s} {times}", flush=True)
    for option, (ok, total) in summary.items():
        print(f"{option}: {ok} of {total} exports with correct gradients")


if __name__ == "__main__":
    main()
