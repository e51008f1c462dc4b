"""[envelope.NAME] tables: every feature's sigma and bounds, and the feature groups
(coherent shifts, correlated envelopes with their covariance or correlation matrix)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from robustcheck.schema import did_you_mean, is_number, unknown_key_error, validate
from robustcheck.spec.fields import FEATURE_FIELDS, GROUP_FIELDS
from robustcheck.spec.problems import Errors, error
from robustcheck.spec.types import EnvelopeGroup, FeatureEnvelope, InputSpec

GROUPS_KEY = "groups"


def feature_envelope(table: Any, where: str, source: str | Path) -> FeatureEnvelope:
    """One feature's envelope entry, validated (sigma presence is the caller's to check)."""
    values = validate(table, FEATURE_FIELDS, where, source)
    if values["choices"] is not None:
        values["choices"] = tuple(float(v) for v in values["choices"])
    if values["unit"] is not None:
        values["unit"] = values["unit"].strip() or None  # "" means no unit
    entry = FeatureEnvelope(**values)
    if entry.min is not None and entry.max is not None and entry.min > entry.max:
        raise error(source, f"min {entry.min} > max {entry.max}", where)
    if entry.integer:
        _check_integer(entry, where, source)
    if entry.choices is not None:
        _check_choices(entry, where, source)
    return entry


def _whole(value: float) -> bool:
    return float(value).is_integer()


def _check_integer(entry: FeatureEnvelope, where: str, source: str | Path) -> None:
    """An integer feature's bounds and placeholder are whole numbers."""
    for key in ("min", "max", "default"):
        value = getattr(entry, key)
        if value is not None and not _whole(value):
            whole = math.floor(value) if key == "max" else math.ceil(value)
            raise error(
                source,
                f"`{key} = {value:g}` is not a whole number, but the feature is `integer`",
                f"{where}.{key}",
                f"give a whole number (e.g. {key} = {whole}), or drop `integer = true`",
            )


def _check_choices(entry: FeatureEnvelope, where: str, source: str | Path) -> None:
    """A categorical feature: a non-empty list of distinct values, and no sigma."""
    choices = entry.choices or ()
    fix = "choices = [22, 211, -211, 130]: the values the feature may take"
    if len(choices) < 2:
        raise error(
            source,
            f"lists {len(choices)} value(s): a swap needs at least two",
            f"{where}.choices",
            fix + " (or `frozen = true` for a feature that never moves)",
        )
    twice = sorted({v for v in choices if choices.count(v) > 1})
    if twice:
        raise error(
            source,
            f"lists {', '.join(f'{v:g}' for v in twice)} more than once",
            f"{where}.choices",
            "list each value once",
        )
    for key in ("absolute", "relative"):
        if getattr(entry, key) is not None:
            raise error(
                source,
                f"`choices` and a sigma (`{key}`) exclude each other: a categorical feature "
                "swaps among its listed values, it does not move by sigma",
                f"{where}.{key}",
                f"drop `{key}` (or `choices` for a continuous or integer feature)",
            )
    if entry.frozen:
        raise error(
            source,
            "`frozen = true` and `choices` contradict each other",
            where,
            "drop `frozen` to let the attack swap among the choices, or `choices` to freeze it",
        )
    if entry.integer and not all(_whole(v) for v in choices):
        odd = next(v for v in choices if not _whole(v))
        raise error(
            source,
            f"the feature is `integer`, but choice {odd:g} is not a whole number",
            f"{where}.choices",
            "list whole numbers, or drop `integer = true`",
        )
    low = -math.inf if entry.min is None else entry.min
    high = math.inf if entry.max is None else entry.max
    outside = [v for v in choices if not low <= v <= high]
    if outside:
        raise error(
            source,
            f"choice(s) {', '.join(f'{v:g}' for v in outside)} lie outside [min, max] = "
            f"[{low:g}, {high:g}]",
            f"{where}.choices",
            "list only values inside the bounds, or widen `min`/`max`",
        )


def parse_envelope(
    section: Any, inputs: dict[str, InputSpec], unparsed: set[str], path: Path, errors: Errors
) -> tuple[dict[str, dict[str, FeatureEnvelope]], dict[str, tuple[EnvelopeGroup, ...]]] | None:
    """Per-feature envelopes of every perturbed input, and their ``groups``.

    Each input's envelope is checked on its own (an input whose [inputs] table is broken is
    skipped: its features are not known); None when the section itself is unusable.
    """
    if not isinstance(section, Mapping):
        errors.add(error(path, "must be a table", "envelope"))
        return None
    perturbed = [name for name, spec in inputs.items() if spec.perturb]
    for name in section:
        if name not in perturbed and name not in unparsed:
            errors.add(unknown_key_error(name, perturbed, "envelope", path))
    out: dict[str, dict[str, FeatureEnvelope]] = {}
    groups: dict[str, tuple[EnvelopeGroup, ...]] = {}
    for name in perturbed:
        found = _input_envelope(section.get(name, {}), name, inputs[name].features, path, errors)
        if found is not None:
            out[name], groups[name] = found
    errors.attempt(_check_group_names, groups, path)
    return out, {name: found for name, found in groups.items() if found}


def _input_envelope(
    table: Any, name: str, features: tuple[str, ...], path: Path, errors: Errors
) -> tuple[dict[str, FeatureEnvelope], tuple[EnvelopeGroup, ...]] | None:
    """One [envelope.NAME] table: every feature's entry and the groups; None on an error."""
    if not isinstance(table, Mapping):
        errors.add(error(path, "must be a table of features", f"envelope.{name}"))
        return None
    if GROUPS_KEY in features:
        errors.add(
            error(
                path,
                f"the feature name `{GROUPS_KEY}` is reserved: [envelope.{name}] {GROUPS_KEY} "
                "lists the feature groups",
                f"inputs.{name}.features",
                "rename that feature",
            )
        )
        return None
    before = len(errors)
    raw_groups = []
    # features of a group that does not validate may take their sigma from its covariance:
    # whether they lack a sigma (or give one twice) is not known
    unknown_sigma: set[str] = set()
    for index, entry in enumerate(
        errors.attempt(_group_list, table.get(GROUPS_KEY), name, path) or []
    ):
        raw = errors.attempt(
            _group_table, entry, f"envelope.{name}.{GROUPS_KEY}[{index}]", features, path
        )
        if raw is not None:
            raw_groups.append(raw)
        elif isinstance(entry, Mapping) and isinstance(entry.get("features"), list):
            unknown_sigma.update(f for f in entry["features"] if isinstance(f, str))
    from_covariance = {
        feature
        for group in raw_groups
        if group["covariance"] is not None
        for feature in group["features"]
    }
    for feature in table:
        if feature != GROUPS_KEY and feature not in features:
            errors.add(
                unknown_key_error(feature, [*features, GROUPS_KEY], f"envelope.{name}", path)
            )
    missing = [f for f in features if f not in table]
    if missing:
        errors.add(
            error(
                path,
                f"no envelope for {len(missing)} feature(s): {', '.join(missing)}",
                f"envelope.{name}",
                "give each an `absolute` or `relative` sigma, or `frozen = true`",
            )
        )
    entries: dict[str, FeatureEnvelope] = {}
    for feature in features:
        if feature in table:
            sigma_from = None if feature in unknown_sigma else feature in from_covariance
            entry = errors.attempt(
                _feature_entry, table[feature], f"envelope.{name}.{feature}", sigma_from, path
            )
            if entry is not None:
                entries[feature] = entry
    if len(errors) > before:
        return None
    found = []
    for index, raw in enumerate(raw_groups):
        group = errors.attempt(_finish_group, raw, index, name, entries, path)
        if group is not None:
            found.append(group)
    if len(errors) > before:
        return None
    groups = tuple(found)
    errors.attempt(_check_overlaps, groups, name, path)
    return entries, groups


def _feature_entry(
    table: Any, where: str, from_covariance: bool | None, path: Path
) -> FeatureEnvelope:
    """One feature's entry with its sigma: its own, or (``from_covariance``) its group's;
    ``from_covariance`` None: not known (its group is broken), so not checked."""
    entry = feature_envelope(table, where, path)
    has_sigma = entry.absolute is not None or entry.relative is not None
    if from_covariance and has_sigma:
        raise error(
            path,
            "sigma given twice: the feature is in a group with a `covariance`",
            where,
            "drop `absolute`/`relative` here: the covariance's diagonal is its variance",
        )
    if from_covariance is False and entry.needs_sigma:
        raise error(
            path,
            "no uncertainty given",
            where,
            "set `absolute = ...` or `relative = ...` (or `frozen = true`)",
        )
    return entry


GROUP_FIX = (
    'groups = [{ features = ["pt"], coherent = true, relative = 0.02 }] (one shared shift per '
    'event), or [{ features = ["eta", "phi"], covariance = [[...], [...]] }] (correlated)'
)


def _group_list(value: Any, name: str, path: Path) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise error(
            path,
            f"must be a list of group tables, got {value!r}",
            f"envelope.{name}.{GROUPS_KEY}",
            GROUP_FIX,
        )
    return value


def _group_table(entry: Any, where: str, features: tuple[str, ...], path: Path) -> dict[str, Any]:
    """Validate one group's keys, features and matrix (matrices not yet in feature units)."""
    values = validate(entry, GROUP_FIELDS, where, path)
    names = values["features"]
    if not names:
        raise error(path, "lists no features", f"{where}.features", GROUP_FIX)
    for feature in names:
        if feature not in features:
            hint = did_you_mean(feature, features) or f"one of: {', '.join(features)}"
            raise error(path, f"unknown feature `{feature}`", f"{where}.features", hint)
    dupes = sorted({f for f in names if names.count(f) > 1})
    if dupes:
        raise error(path, f"lists {dupes} more than once", f"{where}.features")
    values["features"] = tuple(names)
    values["where"] = where
    matrices = [key for key in ("covariance", "correlation") if values[key] is not None]
    sigmas = [key for key in ("relative", "absolute") if values[key] is not None]
    if values["coherent"]:
        if matrices:
            raise error(
                path,
                f"a coherent group moves by one shared shift and takes no `{matrices[0]}`",
                f"{where}.{matrices[0]}",
                "drop `coherent = true` for a correlated envelope, or the matrix for a "
                "coherent shift",
            )
        if not sigmas:
            raise error(
                path,
                "coherent group without sigma",
                where,
                "set `relative = ...` (a scale, e.g. a jet energy scale) or "
                "`absolute = ...` (an additive shift)",
            )
        return values
    if sigmas:
        raise error(
            path,
            f"`{sigmas[0]}` sets the shared shift of a coherent group, but this group is not "
            "coherent",
            f"{where}.{sigmas[0]}",
            "add `coherent = true`, or give a `covariance`/`correlation` for a correlated envelope",
        )
    if not matrices:
        raise error(
            path,
            "group without sigma: neither coherent nor correlated",
            where,
            "set `coherent = true` with `relative`/`absolute`, or a `covariance` or "
            "`correlation` matrix",
        )
    if len(matrices) == 2:
        raise error(
            path,
            "gives both `covariance` and `correlation`",
            where,
            "keep one: a covariance in the features' units, or a correlation over their "
            "absolute sigmas",
        )
    kind = matrices[0]
    values[kind] = _matrix(values[kind], len(names), f"{where}.{kind}", kind, path)
    return values


def _matrix(
    value: list[Any], size: int, where: str, kind: str, path: Path
) -> tuple[tuple[float, ...], ...]:
    """A symmetric positive definite size x size matrix, or a SpecError saying what is wrong."""
    fix = f"{kind} = [[...], ...]: {size} rows of {size} numbers, in the order of `features`"
    if not (
        len(value) == size
        and all(
            isinstance(row, list) and len(row) == size and all(is_number(v) for v in row)
            for row in value
        )
    ):
        raise error(
            path,
            f"must be a {size}x{size} matrix (one row per feature of the group), got {value!r}",
            where,
            fix,
        )
    matrix = tuple(tuple(float(v) for v in row) for row in value)
    if not all(math.isfinite(v) for row in matrix for v in row):
        raise error(path, "holds a NaN or infinite entry", where, fix)
    if kind == "correlation":
        for i in range(size):
            if not math.isclose(matrix[i][i], 1.0, rel_tol=1e-9):
                raise error(
                    path,
                    f"diagonal entry [{i}][{i}] is {matrix[i][i]:g}, not 1",
                    where,
                    "a correlation matrix has ones on its diagonal (use `covariance` for "
                    "variances)",
                )
            for j in range(size):
                if abs(matrix[i][j]) > 1.0:
                    raise error(
                        path,
                        f"entry [{i}][{j}] = {matrix[i][j]:g} is outside [-1, 1]",
                        where,
                        "correlation coefficients lie between -1 and 1",
                    )
    scale = max(abs(matrix[i][i]) for i in range(size)) or 1.0
    for i in range(size):
        for j in range(i + 1, size):
            if abs(matrix[i][j] - matrix[j][i]) > 1e-9 * scale:
                raise error(
                    path,
                    f"is not symmetric: [{i}][{j}] = {matrix[i][j]:g} but "
                    f"[{j}][{i}] = {matrix[j][i]:g}",
                    where,
                    f"a {kind} matrix equals its transpose",
                )
    if not _positive_definite(matrix):
        raise error(
            path,
            "is not positive definite",
            where,
            "every variance must be > 0 and the correlations mutually consistent (no "
            "zero or negative eigenvalue); for fully correlated features use a coherent group",
        )
    return matrix


def _positive_definite(matrix: tuple[tuple[float, ...], ...]) -> bool:
    """Cholesky factorisation in pure Python (the spec module imports no numpy)."""
    size = len(matrix)
    lower = [[0.0] * size for _ in range(size)]
    for i in range(size):
        for j in range(i + 1):
            rest = matrix[i][j] - sum(lower[i][k] * lower[j][k] for k in range(j))
            if i == j:
                if rest <= 1e-12 * abs(matrix[i][i]) or rest <= 0.0:
                    return False
                lower[i][i] = math.sqrt(rest)
            else:
                lower[i][j] = rest / lower[j][j]
    return True


def _finish_group(
    raw: dict[str, Any],
    index: int,
    name: str,
    entries: dict[str, FeatureEnvelope],
    path: Path,
) -> EnvelopeGroup:
    """The group with its covariance in feature units; fills sigmas from a covariance."""
    where = raw["where"]
    features = raw["features"]
    for feature in features:
        entry = entries[feature]
        if entry.categorical:
            raise error(
                path,
                f"feature `{feature}` is categorical (`choices`), so no group may move it",
                f"{where}.features",
                f"drop `{feature}` from the group",
            )
        if entry.integer and (raw["covariance"] is not None or raw["correlation"] is not None):
            raise error(
                path,
                f"feature `{feature}` is integer, so it cannot be in a correlated group (a "
                "Mahalanobis ball has no whole-unit steps)",
                f"{where}.features",
                f"drop `{feature}` from the group; a coherent group may hold it (its shifted "
                "values are rounded to whole units)",
            )
        if not entry.movable:
            kind = "frozen" if entry.frozen else "integer"
            fix = (
                f"drop `{feature}` from the group, or its `frozen = true`"
                if entry.frozen
                else f"drop `{feature}` from the group, or give it a sigma (`absolute = 1.0`) "
                "so that it may move by whole units"
            )
            raise error(
                path,
                f"feature `{feature}` is {kind}"
                + ("" if entry.frozen else " without a sigma")
                + ", so no group may move it",
                f"{where}.features",
                fix,
            )
    covariance = raw["covariance"]
    if raw["correlation"] is not None:
        sigmas = []
        for feature in features:
            entry = entries[feature]
            if entry.relative is not None or entry.absolute is None:
                raise error(
                    path,
                    f"a correlation is over the features' absolute sigmas, but `{feature}` "
                    + ("has a relative sigma" if entry.relative is not None else "has none"),
                    f"envelope.{name}.{feature}",
                    f"give `{feature}` `absolute = ...` only, or use `covariance = ...` in "
                    "the features' units",
                )
            sigmas.append(entry.absolute)
        covariance = tuple(
            tuple(r * si * sj for r, sj in zip(row, sigmas, strict=True))
            for row, si in zip(raw["correlation"], sigmas, strict=True)
        )
    elif covariance is not None:
        for i, feature in enumerate(features):
            entries[feature] = replace(entries[feature], absolute=math.sqrt(covariance[i][i]))
    return EnvelopeGroup(
        input=name,
        name=raw["name"] or f"{name}.{GROUPS_KEY}[{index}]",
        features=features,
        coherent=raw["coherent"],
        relative=raw["relative"],
        absolute=raw["absolute"],
        covariance=covariance,
    )


def _check_overlaps(groups: tuple[EnvelopeGroup, ...], name: str, path: Path) -> None:
    """No feature in two coherent or in two correlated groups; group names unique per input."""
    for kind, members in (
        ("coherent", [g for g in groups if g.coherent]),
        ("correlated", [g for g in groups if g.correlated]),
    ):
        owner: dict[str, str] = {}
        for group in members:
            for feature in group.features:
                if feature in owner:
                    raise error(
                        path,
                        f"feature `{feature}` is in two {kind} groups (`{owner[feature]}` and "
                        f"`{group.name}`)",
                        f"envelope.{name}.{GROUPS_KEY}",
                        f"put `{feature}` in one {kind} group only (merge the two groups)",
                    )
                owner[feature] = group.name
    seen: set[str] = set()
    for group in groups:
        if group.name in seen:
            raise error(
                path,
                f"two groups are named `{group.name}`",
                f"envelope.{name}.{GROUPS_KEY}",
                "give each group of an input its own name (merge their features instead)",
            )
        seen.add(group.name)


def _check_group_names(groups: dict[str, tuple[EnvelopeGroup, ...]], path: Path) -> None:
    """Groups of one name across inputs share a shift, so they must all be coherent."""
    by_name: dict[str, list[EnvelopeGroup]] = {}
    for found in groups.values():
        for group in found:
            by_name.setdefault(group.name, []).append(group)
    for group_name, members in by_name.items():
        if len(members) > 1 and not all(g.coherent for g in members):
            inputs = ", ".join(f"[envelope.{g.input}]" for g in members)
            raise error(
                path,
                f"group name `{group_name}` is used in {inputs}, but only coherent groups "
                "share a shift across inputs",
                f"envelope.{members[-1].input}.{GROUPS_KEY}",
                "rename the correlated group",
            )


def coherent_group_names(groups: Mapping[str, tuple[EnvelopeGroup, ...]]) -> list[str]:
    """Names of the coherent groups, in spec order, each once (shared names count once)."""
    names = [g.name for found in groups.values() for g in found if g.coherent]
    return list(dict.fromkeys(names))
