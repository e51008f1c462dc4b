"""Checks: one module each; declared here so specs validate without importing torch."""

from __future__ import annotations

from robustcheck.registry import Declaration
from robustcheck.schema import Field

_COMMON = {
    "name": Field("str", None, doc="the check's name in reports and pytest item ids"),
    "type": Field("str", doc="the check type"),
}

WORKING_POINT = Field(
    "table",
    None,
    doc="decide by a threshold fixed on the nominal sample, e.g. { signal_efficiency = 0.5 }",
    table={
        "signal_efficiency": Field(
            "number",
            doc="signal efficiency on the nominal sample",
            minimum=0.0,
            maximum=1.0,
            exclusive_minimum=True,
        )
    },
)

REGRESSION = {
    "no_regression": Field(
        "bool", False, doc="fail when worse than the baseline beyond statistical noise"
    ),
    "regression_tolerance": Field(
        "number",
        None,
        doc="allowed worsening before the test (in the figure's units)",
        minimum=0.0,
    ),
    "regression_confidence": Field(
        "number",
        0.95,
        doc="one-sided confidence of the regression test",
        minimum=0.5,
        maximum=1.0,
        exclusive_minimum=True,
    ),
}

CHECKS: dict[str, Declaration] = {
    "fooling_rate": Declaration(
        "fooling_rate",
        "robustcheck.checks.fooling_rate:FoolingRate",
        {
            **_COMMON,
            **REGRESSION,
            "attack": Field("str", doc="name of an [attacks.NAME] table"),
            "max": Field("number", doc="largest allowed fooling rate", minimum=0.0, maximum=1.0),
            "confidence": Field(
                "number",
                0.95,
                doc="confidence level of the Clopper-Pearson interval",
                minimum=0.0,
                maximum=1.0,
                exclusive_minimum=True,
            ),
            "working_point": WORKING_POINT,
            "gradient_masking_check": Field(
                "bool",
                False,
                doc="also run random search with the same epsilon; warn when it fools more",
            ),
        },
        doc="fraction of correctly classified events whose decision the attack flips",
    ),
    "invariance": Declaration(
        "invariance",
        "robustcheck.checks.invariance:Invariance",
        {
            **_COMMON,
            "attack": Field("str", doc="name of an [attacks.NAME] table"),
            "ks_min_pvalue": Field(
                "number",
                None,
                doc="smallest allowed per-feature KS p-value after the correction: with "
                "holm, the most often an unchanged sample may fail the whole check",
                minimum=0.0,
                maximum=1.0,
            ),
            "chi2_min_pvalue": Field(
                "number",
                None,
                doc="smallest allowed per-feature chi-squared p-value after the correction: "
                "with holm, the most often an unchanged sample may fail the whole check",
                minimum=0.0,
                maximum=1.0,
            ),
            "correction": Field(
                "str",
                "holm",
                doc="multiple-testing correction of the p-values: holm (Holm-Bonferroni over "
                "every KS and chi-squared test of the check together) or none (each test held "
                "at its threshold on its own)",
                choices=("holm", "none"),
            ),
            "max_jsd": Field(
                "number",
                None,
                doc="largest allowed Jensen-Shannon distance (base 2)",
                minimum=0.0,
                maximum=1.0,
            ),
            "max_correlation_change": Field(
                "number",
                None,
                doc="largest allowed change of a Pearson correlation",
                minimum=0.0,
            ),
            "max_correlation_frobenius": Field(
                "number",
                None,
                doc="largest allowed relative Frobenius norm of the change",
                minimum=0.0,
            ),
            "bins": Field("int", 20, doc="quantile bins for chi-squared and JSD", minimum=2),
        },
        doc="perturbed marginals and correlations are statistically the nominal ones",
        requires_one_of=(
            "ks_min_pvalue",
            "chi2_min_pvalue",
            "max_jsd",
            "max_correlation_change",
            "max_correlation_frobenius",
        ),
    ),
    "resilience": Declaration(
        "resilience",
        "robustcheck.checks.resilience:Resilience",
        {
            **_COMMON,
            **REGRESSION,
            "max_auc_change_percent": Field(
                "number",
                None,
                doc="largest allowed 100*|AUC_nom - AUC_alt|/AUC_nom",
                minimum=0.0,
            ),
            "min_auc": Field(
                "number",
                None,
                doc="smallest allowed AUC on each sample",
                minimum=0.0,
                maximum=1.0,
            ),
            "max_rejection_change_percent": Field(
                "number",
                None,
                doc="largest allowed change of the background rejection at "
                "the working point, in percent of the nominal",
                minimum=0.0,
            ),
            "working_point": WORKING_POINT,
        },
        doc="AUC change between the nominal and the alternative generator (arXiv:2509.19431)",
        needs_alternative=True,
        requires_one_of=("max_auc_change_percent", "min_auc", "max_rejection_change_percent"),
    ),
    "auc_under_attack": Declaration(
        "auc_under_attack",
        "robustcheck.checks.auc_under_attack:AucUnderAttack",
        {
            **_COMMON,
            **REGRESSION,
            "attack": Field("str", doc="name of an [attacks.NAME] table"),
            "max_auc_drop": Field(
                "number",
                None,
                doc="largest allowed AUC_nominal - AUC_adversarial",
                minimum=0.0,
                maximum=1.0,
            ),
            "min_auc": Field(
                "number",
                None,
                doc="smallest allowed AUC under attack",
                minimum=0.0,
                maximum=1.0,
            ),
        },
        doc="AUC when every event is attacked with the full budget (Stein et al.)",
        requires_one_of=("max_auc_drop", "min_auc"),
    ),
    "fraction_bias": Declaration(
        "fraction_bias",
        "robustcheck.checks.fraction_bias:FractionBias",
        {
            **_COMMON,
            **REGRESSION,
            "max_bias": Field(
                "number",
                None,
                doc="largest allowed |fitted - true| signal fraction",
                minimum=0.0,
                maximum=1.0,
            ),
            "max_pull": Field(
                "number",
                None,
                doc="largest allowed |bias| / fit uncertainty",
                minimum=0.0,
            ),
            "bins": Field("int", 20, doc="bins of the discriminant templates", minimum=2),
        },
        doc="bias of a template fit of the signal fraction in the alternative sample",
        needs_alternative=True,
        requires_one_of=("max_bias", "max_pull"),
    ),
    "property": Declaration(
        "property",
        "robustcheck.checks.property:Property",
        {
            **_COMMON,
            "epsilon": Field(
                "number",
                doc="radius of the perturbations in units of each feature's sigma",
                minimum=0.0,
            ),
            "max_score_change": Field(
                "number",
                None,
                doc="largest allowed change of any event's signal probability",
                minimum=0.0,
                maximum=1.0,
            ),
            "decision_unchanged": Field("bool", None, doc="true: no event's decision may change"),
            "working_point": WORKING_POINT,
            "max_events": Field(
                "int", None, doc="test the first N events of the nominal sample", minimum=1
            ),
            "max_examples": Field(
                "int",
                None,
                doc="perturbations to try (default: the hypothesis profile's, 100)",
                minimum=1,
            ),
            "seed": Field(
                "int",
                None,
                doc="fixes the search: reproducible, no example database (overridden by "
                "--robustcheck-seed); unset, hypothesis seeds it and replays saved failures",
            ),
        },
        doc="no perturbation within epsilon sigma moves any event's score (or decision) more "
        "than allowed; searched and shrunk with hypothesis",
        requires_one_of=("max_score_change", "decision_unchanged"),
    ),
    "loss_surface": Declaration(
        "loss_surface",
        "robustcheck.checks.loss_surface:LossSurfaceCheck",
        {
            **_COMMON,
            "max_loss_increase": Field(
                "number",
                doc="largest allowed rise of the mean loss (nats per event) within epsilon",
                minimum=0.0,
            ),
            "epsilon": Field(
                "number",
                1.0,
                doc="half-width of the scan in units of each feature's sigma",
                minimum=0.0,
                exclusive_minimum=True,
            ),
            "points": Field("int", 9, doc="points per axis, from -epsilon to +epsilon", minimum=2),
            "features": Field(
                "str_list", None, doc="features to scan (default: every movable feature)"
            ),
            "grid": Field(
                "str_list", None, doc="two features for a 2-D grid whose rise counts too"
            ),
            "max_events": Field(
                "int",
                None,
                doc="average over the first N events of the nominal sample",
                minimum=1,
            ),
            "batch_size": Field("int", 4096, doc="model evaluations per batch", minimum=1),
        },
        doc="mean loss along each feature axis in sigma units: bounds its largest rise "
        "within epsilon and names the feature with the sharpest one",
    ),
}
