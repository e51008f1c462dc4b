"""Adversarial training with robustcheck's own envelope and attacks.

The adversarial examples a tagger is trained on come from the same envelope (sigma per
feature, bounds, frozen features, padding masks) and the same attack classes that later test
it, as in Stein et al., Comput. Softw. Big Sci. 6 (2022) 15 (FGSM in units of each feature's
uncertainty). The model is never changed: attacks run with it in eval mode and its parameters
frozen, and the modes, ``requires_grad`` flags and ``.grad`` of the parameters are exactly as
before on return.

Recipe (one optimiser step per batch; ``weight`` mixes clean and adversarial loss)::

    from robustcheck.training import adversarial_batch, make_envelope

    envelope = make_envelope({"x": {"jet_mass": {"relative": 0.03, "min": 0.0},
                                    "n_const": {"frozen": True}}})
    for x, y in loader:
        x_adv = adversarial_batch(model, x, y, envelope, epsilon=1.0, method="fgsm")
        loss = (1 - weight) * F.cross_entropy(model(x), y) \\
            + weight * F.cross_entropy(model(x_adv), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

Compute ``x_adv`` before the clean forward pass. With ``method="pgd"`` pass ``steps`` (and
optionally ``step_size``, ``random_start``); without ``seed`` the batch's seed is drawn from
torch's global generator, so each batch gets its own start (robustcheck.event_random keys
the streams by the seed and each event's position in the batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from robustcheck import registry
from robustcheck.attacks.base import AttackBatch
from robustcheck.decision import Decision
from robustcheck.envelope import Envelope, InputEnvelope, Inputs
from robustcheck.errors import SpecError
from robustcheck.event_random import EventRandom
from robustcheck.spec import AttackSpec, Spec, feature_envelope, load_spec
from robustcheck.taggers.torch_module import wrap_module

SOURCE = "robustcheck.training"


def training_methods() -> list[str]:
    """The attack methods that declare they can make adversarial training batches."""
    return [name for name, declared in registry.attacks().items() if declared.training]


def make_envelope(
    tables: Mapping[str, Mapping[str, Mapping[str, Any]]], masks: Mapping[str, str] | None = None
) -> Envelope:
    """An envelope from ``{input: {feature: {"relative": ..., "min": ...}}}`` tables.

    The feature tables take the keys of a spec's ``[envelope.NAME]`` entries (``absolute``,
    ``relative``, ``min``, ``max``, ``frozen``, ``integer``, ``choices``, ``default``), in
    feature order; ``masks`` maps a particle input to the input holding its padding mask.
    For coherent or correlated groups, write a spec and use ``envelope_from_spec``.
    """
    masks = dict(masks or {})
    unknown = sorted(set(masks) - set(tables))
    if unknown:
        raise SpecError(
            f"masks name inputs without an envelope: {unknown}",
            file=SOURCE,
            field="masks",
            fix=f"use one of: {', '.join(tables)}",
        )
    inputs = {}
    for name, table in tables.items():
        if not isinstance(table, Mapping) or not table:
            raise SpecError(
                "must be a non-empty table of features",
                file=SOURCE,
                field=f"envelope.{name}",
                fix='{"jet_mass": {"relative": 0.03}, ...}',
            )
        entries = {}
        for feature, entry in table.items():
            where = f"envelope.{name}.{feature}"
            parsed = feature_envelope(entry, where, SOURCE)
            if parsed.needs_sigma:
                raise SpecError(
                    "no uncertainty given",
                    file=SOURCE,
                    field=where,
                    fix="set `absolute` or `relative` (or `frozen`: True)",
                )
            entries[feature] = parsed
        inputs[name] = InputEnvelope.from_features(name, entries, masks.get(name))
    return Envelope(inputs)


def envelope_from_spec(spec: Spec | str | Path) -> Envelope:
    """The envelope of a spec (a loaded Spec or the path of a spec file)."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    return Envelope.from_spec(spec)


def _attack(method: str, epsilon: float, seed: int, options: Mapping[str, Any]) -> Any:
    declared = registry.attacks().get(method)
    if declared is None or not declared.training:
        raise SpecError(
            f"method {method!r} cannot make adversarial training batches",
            file=SOURCE,
            field="method",
            fix=f"use one of: {', '.join(training_methods())}",
        )
    table = {"epsilon": epsilon, "seed": seed, **options}
    values = registry.attack_options(method, table, "adversarial_batch", SOURCE)
    return registry.attacks()[method].load()(AttackSpec("adversarial_batch", method, values), seed)


def _named_inputs(
    inputs: torch.Tensor | Mapping[str, torch.Tensor], envelope: Envelope
) -> dict[str, torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        if len(envelope.inputs) != 1:
            raise SpecError(
                f"one tensor given, but the envelope has inputs {list(envelope.inputs)}",
                file=SOURCE,
                field="inputs",
                fix="pass a dict {input name: tensor} (masks included)",
            )
        named = {next(iter(envelope.inputs)): inputs}
    else:
        named = dict(inputs)
    needed = set(envelope.inputs) | {e.mask for e in envelope.inputs.values() if e.mask}
    missing = sorted(needed - set(named))
    if missing:
        raise SpecError(
            f"inputs {missing} are in the envelope but not among the inputs {list(named)}",
            file=SOURCE,
            field="inputs",
            fix="pass every perturbed input and its mask",
        )
    return named


def adversarial_batch(
    model: torch.nn.Module,
    inputs: torch.Tensor | Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    envelope: Envelope,
    epsilon: float,
    method: str = "fgsm",
    *,
    seed: int | None = None,
    early_stop: bool = False,
    scores: str = "logits",
    output: str | int = 0,
    signal_class: int = 1,
    input_names: list[str] | None = None,
    **options: Any,
) -> Any:
    """Adversarial copies of a training batch, within ``epsilon`` sigma of the envelope.

    ``inputs`` is one tensor (envelope with one input) or a dict of the model's named inputs,
    masks included; the result has the same form, detached, on the inputs' device. ``labels``
    are class indices. ``options`` are the attack's own spec keys (``steps``, ``step_size``,
    ``random_start``, ``lambda_dist`` ...). With ``early_stop`` each event stops at the first
    point that flips its decision (friendly adversarial training); by default every event gets
    the whole budget, as in standard adversarial training. ``scores``, ``output`` and
    ``signal_class`` read the model's output as a spec's ``[model]`` table does.
    """
    named = _named_inputs(inputs, envelope)
    envelope.check_shapes({name: tuple(x.shape) for name, x in named.items()}, SOURCE)
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    attack = _attack(method, epsilon, seed, options)
    tagger = wrap_module(
        model,
        f"{type(model).__name__} (adversarial_batch)",
        input_names=input_names,
        output=output,
        scores=scores,
        signal_class=signal_class,
    )
    tagger.bind(list(named))
    device = tagger.device
    home = next(iter(named.values())).device
    nominal: Inputs = {
        name: x.detach().to(device, torch.float32)
        if name in envelope.inputs
        else x.detach().to(device)
        for name, x in named.items()
    }
    labels = labels.detach().to(device)
    decision = Decision(signal_class)
    # the events' random streams: keyed by the seed and their positions in this batch
    streams = EventRandom.of(seed, method, torch.arange(len(labels), device=device))
    with tagger.frozen():
        batch = AttackBatch(
            tagger=tagger,
            nominal=nominal,
            target=decision.target(labels),
            box=envelope.to(device).box(nominal, epsilon),
            decision=decision,
            random=streams,
            early_stop=early_stop,
        )
        adversarial = attack.perturb(batch)
    out = {
        name: adversarial[name].to(home, x.dtype) if name in adversarial else x
        for name, x in named.items()
    }
    if isinstance(inputs, torch.Tensor):
        return out[next(iter(envelope.inputs))]
    return out
