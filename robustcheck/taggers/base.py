"""The tagger interface every backend implements, and what they share."""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from robustcheck.errors import ModelError, exception_text

Inputs = dict[str, torch.Tensor]


def to_log_probs(scores: torch.Tensor, kind: str) -> torch.Tensor:
    """Class log-probabilities (N, C) from a model's score output."""
    if kind in ("sigmoid", "binary_logit"):
        z = scores.reshape(scores.shape[0], -1)
        if z.shape[1] != 1:
            raise ModelError(
                f"scores = {kind!r} needs one output per event, got shape {tuple(scores.shape)}",
                field="model.scores",
                fix='use scores = "logits" or "probabilities"',
            )
        z = z[:, 0]
        if kind == "sigmoid":
            tiny = torch.finfo(z.dtype).eps  # 1 - 1e-12 would round to 1 in float32
            p = z.clamp(tiny, 1 - tiny)
            return torch.stack((torch.log1p(-p), torch.log(p)), dim=1)
        return torch.stack((F.logsigmoid(-z), F.logsigmoid(z)), dim=1)
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ModelError(
            f"scores = {kind!r} needs an output of shape (events, classes), "
            f"got {tuple(scores.shape)}",
            field="model.scores",
            fix='for a single binary output use scores = "sigmoid" or "binary_logit"',
        )
    if kind == "logits":
        return F.log_softmax(scores, dim=1)
    return torch.log(scores.clamp_min(1e-12))


def gradient_problem(
    log_probs: Callable[[Inputs], torch.Tensor], sample: Inputs, finite: bool = True
) -> str | None:
    """Why ``log_probs`` gives no usable input gradients on ``sample`` (None when it does):
    an operation without a derivative, an output cut off from its inputs, or (``finite``)
    gradients that are NaN or infinite. Only input gradients are taken."""
    inputs = {
        name: x.detach().clone().requires_grad_(True) if x.is_floating_point() else x
        for name, x in sample.items()
    }
    names = [name for name, x in inputs.items() if x.requires_grad]
    if not names:
        return None
    try:
        out = log_probs(inputs)
        if not out.requires_grad:
            return "its scores do not depend differentiably on its inputs"
        grads = torch.autograd.grad(out.sum(), [inputs[n] for n in names], allow_unused=True)
    except RuntimeError as exc:
        return exception_text(exc)
    for name, grad in zip(names, grads, strict=True):
        if finite and grad is not None and not bool(torch.isfinite(grad).all()):
            bad = int((~torch.isfinite(grad)).sum())
            return (
                f"its input gradients of `{name}` are NaN or infinite for {bad:,} of "
                f"{grad.numel():,} entries"
            )
    return None


def select_output(raw: Any, output: str | int, names: Sequence[str] | None = None) -> torch.Tensor:
    """Pick the score tensor from a model's return value (tensor, tuple or dict)."""
    if isinstance(raw, torch.Tensor):
        if output not in (0, "0") and not (names and output in names):
            raise ModelError(
                f"model returns a single tensor, but [model] output = {output!r}",
                field="model.output",
                fix="use output = 0",
            )
        return raw
    if isinstance(raw, Mapping):
        if output in raw:
            return raw[output]
        keys = list(raw)
        if isinstance(output, int) and output < len(keys):
            return raw[keys[output]]
        raise ModelError(f"model output has no {output!r}; it has {keys}", field="model.output")
    if isinstance(raw, (tuple, list)):
        if isinstance(output, str):
            if names and output in names:
                return raw[list(names).index(output)]
            if names:
                raise ModelError(
                    f"the model has no output named {output!r}; its outputs are {list(names)}",
                    field="model.output",
                    fix=f"use output = {names[0]!r} (or an index from 0 to {len(raw) - 1})",
                )
            raise ModelError(
                f"output {output!r} is a name, but the model returns {len(raw)} unnamed outputs",
                field="model.output",
                fix=f"use an index from 0 to {len(raw) - 1}",
            )
        if output >= len(raw):
            raise ModelError(
                f"model returns {len(raw)} outputs, no index {output}", field="model.output"
            )
        return raw[output]
    raise ModelError(f"model returned {type(raw).__name__}, not tensors", field="model.path")


class Tagger:
    """A classifier with named inputs, giving class log-probabilities.

    ``binding`` lists the spec's input names in the model's call order. ``bridge_error``
    says why the model cannot give input gradients (an ONNX model whose graph robustcheck's
    interpreter cannot run or differentiate, a TorchScript model traced without gradients);
    None when it can, or has not been asked yet.
    """

    backend = "base"
    bridge_error: str | None = None

    def __init__(
        self,
        source: str,
        model_inputs: Sequence[str],
        *,
        output: str | int = 0,
        scores: str = "logits",
        signal_class: int = 1,
    ) -> None:
        self.source = source
        self.model_inputs = tuple(model_inputs)
        self.binding = self.model_inputs
        self.output = output
        self.scores = scores
        self.signal_class = signal_class
        self.device = torch.device("cpu")

    def bind(self, spec_inputs: Sequence[str], spec_file: str | None = None) -> None:
        """Match the spec's input names to the model's, or raise a clear error."""
        spec_inputs = list(spec_inputs)
        if sorted(spec_inputs) == sorted(self.model_inputs):
            self.binding = self.model_inputs
        elif len(spec_inputs) == len(self.model_inputs) == 1:
            self.binding = tuple(spec_inputs)
        else:
            raise ModelError(
                f"the model's inputs are {list(self.model_inputs)}, but the spec maps "
                f"{spec_inputs} (model {self.source})",
                file=spec_file or self.source,
                field="data.nominal.inputs",
                fix="name the inputs as the model does (or set [model] input_names)",
            )

    @property
    def differentiable(self) -> bool:
        """Whether ``log_probs`` supports gradients with respect to the inputs."""
        return True

    def to(self, device: torch.device) -> Tagger:
        self.device = device
        return self

    def prepare_gradients(self, sample: Inputs) -> None:
        """Make ``log_probs`` differentiable, checked on ``sample``; raise ModelError if not."""

    def log_probs(self, inputs: Inputs) -> torch.Tensor:
        """Differentiable class log-probabilities (N, C) on ``self.device``."""
        raise NotImplementedError

    def evaluate(self, inputs: Inputs) -> torch.Tensor:
        """Class log-probabilities without gradients (backends may use their own runtime)."""
        with torch.no_grad():
            return self.log_probs(inputs)

    def raw_scores(self, inputs: Inputs) -> torch.Tensor | None:
        """The model's selected output before it becomes probabilities (for the sanity
        gate on ``scores``), or None when a backend cannot give it."""
        return None

    def source_file(self) -> Path | None:
        """The file of the code that defines the model, for a model without a file of its
        own (an import path); None when there is none."""
        return None

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Eval mode and frozen parameters for the duration; restored exactly afterwards."""
        yield


class TorchTagger(Tagger):
    """A tagger backed by a torch callable (nn.Module, ScriptModule or exported program)."""

    backend = "torch"

    def __init__(
        self,
        module: torch.nn.Module,
        source: str,
        model_inputs: Sequence[str],
        *,
        owned: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(source, model_inputs, **kwargs)
        self.module = module
        self.owned = owned
        self.device = _module_device(module)
        self._gradients_checked = False
        self.compiled = False  # [model] compile: the module runs through torch.compile
        self._compiled: tuple[torch.nn.Module, Any] | None = None  # (module, compiled)
        self._compile_verified = False
        self._spec_file: str | None = None

    def use_compile(self, spec_file: str) -> None:
        """Run the module through ``torch.compile`` from now on (compiled on first use; a
        failure to compile is a ModelError naming ``model.compile``)."""
        if not hasattr(torch, "compile"):
            raise ModelError(
                f"torch {torch.__version__} has no torch.compile",
                file=spec_file,
                field="model.compile",
                fix="remove compile = true, or use torch 2.0 or later",
            )
        self.compiled = True
        self._spec_file = spec_file

    def to(self, device: torch.device) -> TorchTagger:
        """Move to ``device``; a module the caller owns is copied, never moved."""
        if not _same_device(_module_device(self.module), device):
            module = self.module if self.owned else copy.deepcopy(self.module)
            self.module = module.to(device)
            self.owned = True
        self.device = device
        return self

    def log_probs(self, inputs: Inputs) -> torch.Tensor:
        return to_log_probs(self._output(inputs), self.scores)

    def prepare_gradients(self, sample: Inputs) -> None:
        """Check once, on ``sample``, that the model gives input gradients."""
        if self._gradients_checked:
            return
        with self.frozen():
            reason = gradient_problem(self.log_probs, sample, finite=False)
        if reason is not None:
            scripted = isinstance(self.module, torch.jit.ScriptModule)
            self.bridge_error = f"the model gives no input gradients: {reason}" + (
                " (a TorchScript model traced under torch.no_grad() keeps inference-only "
                "operations, such as the fast path of nn.TransformerEncoderLayer, that have "
                "no gradient)"
                if scripted
                else ""
            )
            raise ModelError(
                self.bridge_error,
                file=self.source,
                field="model.path",
                fix="trace the model with gradients enabled (torch.jit.trace outside "
                "torch.no_grad()) or export it with torch.export"
                if scripted
                else "make the model's forward differentiable in its inputs",
            )
        self._gradients_checked = True

    def raw_scores(self, inputs: Inputs) -> torch.Tensor:
        with torch.no_grad():
            return self._output(inputs)

    def _output(self, inputs: Inputs) -> torch.Tensor:
        args = [inputs[name] for name in self.binding]
        if self.compiled:
            return select_output(self._run_compiled(args), self.output)
        raw = self.module(*args)
        return select_output(raw, self.output)

    def _run_compiled(self, args: list[torch.Tensor]) -> Any:
        """The compiled module's output; on the first call a failure that the plain module
        does not have (no C++ compiler, an operation torch.compile cannot take) becomes a
        ModelError naming ``model.compile``."""
        if self._compiled is None or self._compiled[0] is not self.module:
            self._compiled = (self.module, torch.compile(self.module))
        compiled = self._compiled[1]
        if self._compile_verified:
            return compiled(*args)
        try:
            raw = compiled(*args)
        except Exception as exc:
            self.module(*args)  # the model's own error, if it fails without compiling too
            raise ModelError(
                f"torch.compile failed on the model: {exception_text(exc)}",
                file=self._spec_file or self.source,
                field="model.compile",
                fix="remove compile = true, or install what torch.compile needs (a C++ "
                "compiler such as g++ on CPU, triton on CUDA)",
            ) from None
        self._compile_verified = True
        return raw

    def source_file(self) -> Path | None:
        source = inspect.getsourcefile(type(self.module))
        return Path(source) if source else None

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        modes = [(m, m.training) for m in self.module.modules()]
        grads = [(p, p.requires_grad) for p in self.module.parameters()]
        try:
            for m, _ in modes:  # not .eval(): exported programs refuse it
                m.training = False
            for p, _ in grads:
                p.requires_grad_(False)
            yield
        finally:
            for m, mode in modes:
                m.training = mode
            for p, flag in grads:
                p.requires_grad_(flag)


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` (the current device) are the same place."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (a.index if a.index is not None else current) == (
        b.index if b.index is not None else current
    )
