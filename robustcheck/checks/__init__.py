"""Checks: one module each; declared here so specs validate without importing torch.

Each declaration holds the check's own options with their defaults and docs (the registry
adds ``name``, ``type`` and, with a ``regression`` figure, the ``no_regression`` options) and
what robustcheck needs to know about it: the figure a regression test compares, the limits
the reports read back from its figures, its summary-table headline, and whether the report
plots its attack.
"""

from __future__ import annotations

from robustcheck.declaration import (
    Declaration,
    Figures,
    Limit,
    OptionLimit,
    RegressionFigure,
)
from robustcheck.schema import Field

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


def _fooling_rate_headline(f: Figures) -> tuple[str, str] | None:
    """The rate with its interval, against the upper limit it must stay under."""
    if "fooling_rate" not in f or "ci_high" not in f:
        return None
    cl = f"{100 * float(f.get('confidence', 0.95)):g}% CL"
    figure = f"{float(f['fooling_rate']):.3g} ({cl} {float(f['ci_low']):.3g}-"
    figure += f"{float(f['ci_high']):.3g})"
    return figure, f"upper limit <= {float(f['threshold']):g}"


def _invariance_options(options: Figures) -> tuple[str, str, str] | None:
    """Regions must parse; control_region_events needs a p-value threshold (its level)."""
    from robustcheck.regions import FORM, parse_region

    for name, text in (options.get("regions") or {}).items():
        try:
            parse_region(name, text)
        except ValueError as exc:
            return f"regions.{name}", str(exc), f"write {FORM}"
    levels = ("ks_min_pvalue", "chi2_min_pvalue", "corr_min_pvalue")
    if options.get("control_region_events") is not None and all(
        options.get(key) is None for key in levels
    ):
        return (
            "control_region_events",
            "control_region_events needs a p-value threshold: events_to_detect is the size at "
            "which a test at that level sees the shift",
            f"set one of {', '.join(levels)} (e.g. ks_min_pvalue = 0.01)",
        )
    return None


def _robust_radius_headline(f: Figures) -> tuple[str, str] | None:
    """The radius quantile with its interval, against the least radius its lower end needs."""
    if "quantile_low" not in f or "threshold" not in f:
        return None
    top = float(f.get("max_epsilon", 0.0))

    def text(value: object) -> str:  # None: beyond max_epsilon (censored)
        return f"> {top:g}" if value is None else f"{float(value):.3g}"  # type: ignore[arg-type]

    cl = f"{100 * float(f.get('confidence', 0.95)):g}% CL"
    figure = f"q{100 * float(f['quantile']):g} radius {text(f.get('radius_quantile'))} ({cl} "
    figure += f"{text(f['quantile_low'])}-{text(f.get('quantile_high'))})"
    return figure, f"lower limit > {float(f['threshold']):g}"


CHECKS: dict[str, Declaration] = {
    "fooling_rate": Declaration(
        "fooling_rate",
        "robustcheck.checks.fooling_rate:FoolingRate",
        {
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
            "epsilon": Field(
                "number",
                None,
                doc="with a min_epsilon attack: read its fooling rate vs epsilon curve here "
                "(sigma, at most its max_epsilon; default: at max_epsilon)",
                minimum=0.0,
            ),
            "gradient_masking_check": Field(
                "bool",
                None,
                doc="AutoAttack's sanity checks: warn when gradient-free attacks with the same "
                "epsilon fool more, when input gradients vanish or scores are randomised "
                "(default: on for an ensemble attack, off otherwise)",
            ),
            "gradient_masking_attacks": Field(
                "str_list",
                None,
                doc="the gradient-free attacks the masking check runs: random and/or spsa "
                "(default: random; for an ensemble with gradient-free members, none: their "
                "own counts are compared)",
                choices=("random", "spsa"),
            ),
        },
        doc="fraction of correctly classified events whose decision the attack flips",
        regression=RegressionFigure("fooling_rate", lower_is_better=True, error=None),
        limits=(Limit("threshold", "fooling rate upper limit", "ci_high", "<="),),
        headline=_fooling_rate_headline,
        plots_attack=True,
    ),
    "invariance": Declaration(
        "invariance",
        "robustcheck.checks.invariance:Invariance",
        {
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
            "compare_to": Field(
                "str",
                "independent",
                doc="independent: the attacked values of one half of the nominal sample "
                "against the nominal values of the other half (split with split_seed), as data "
                "against simulation in a control region; same_events: against the same events "
                "before the attack",
                choices=("independent", "same_events"),
            ),
            "split_seed": Field(
                "int", 0, doc="seed of the split into attacked and reference halves", minimum=0
            ),
            "by_class": Field(
                "bool", False, doc="also run every test within each true class (control regions)"
            ),
            "regions": Field(
                "str_map",
                None,
                doc='control regions cut on the nominal discriminant, name -> "score OP NUMBER" '
                'joined by "and", e.g. { high_score = "score > 0.8" }; every test also runs in '
                "each",
            ),
            "corr_min_pvalue": Field(
                "number",
                None,
                doc="smallest allowed p-value of the z test that a pair's Pearson correlation "
                "is unchanged, after the correction (one family with KS and chi-squared)",
                minimum=0.0,
                maximum=1.0,
            ),
            "control_region_events": Field(
                "number",
                None,
                doc="events per sample in the analysis's control regions: fails when a tested "
                "shift would be visible with this many (events_to_detect <= this)",
                minimum=1.0,
            ),
        },
        doc="perturbed marginals and correlations are statistically the nominal ones",
        validate=_invariance_options,
        option_limits={
            "ks_min_pvalue": OptionLimit("min KS p-value", "min_ks_pvalue", "min_ks_feature", ">="),
            "chi2_min_pvalue": OptionLimit(
                "min chi2 p-value", "min_chi2_pvalue", "min_chi2_feature", ">="
            ),
            "max_jsd": OptionLimit("max JS distance", "max_jsd", "max_jsd_feature", "<="),
            "max_correlation_change": OptionLimit(
                "max correlation change", "correlation_change", None, "<="
            ),
            "max_correlation_frobenius": OptionLimit(
                "relative Frobenius change", "correlation_frobenius", None, "<="
            ),
            "corr_min_pvalue": OptionLimit(
                "min correlation p-value", "min_corr_pvalue", "min_corr_feature", ">="
            ),
            "control_region_events": OptionLimit(
                "events to detect", "events_to_detect", "events_to_detect_test", ">="
            ),
        },
        plots_attack=True,
        requires_one_of=(
            "ks_min_pvalue",
            "chi2_min_pvalue",
            "max_jsd",
            "max_correlation_change",
            "max_correlation_frobenius",
            "corr_min_pvalue",
            "control_region_events",
        ),
    ),
    "resilience": Declaration(
        "resilience",
        "robustcheck.checks.resilience:Resilience",
        {
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
        regression=RegressionFigure("auc_change_percent", True, "auc_change_percent_error"),
        limits=(
            Limit("threshold", "AUC change (%)", "auc_change_percent", "<="),
            Limit(
                "min_auc",
                "min AUC",
                lambda f: min(f["auc_nominal"], f["auc_alternative"]),
                ">=",
            ),
        ),
        needs_alternative=True,
        requires_one_of=("max_auc_change_percent", "min_auc", "max_rejection_change_percent"),
    ),
    "auc_under_attack": Declaration(
        "auc_under_attack",
        "robustcheck.checks.auc_under_attack:AucUnderAttack",
        {
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
        regression=RegressionFigure("auc_adversarial", False, "auc_adversarial_error"),
        limits=(
            Limit("threshold", "AUC drop", "auc_drop", "<="),
            Limit("min_auc", "AUC under attack", "auc_adversarial", ">="),
        ),
        requires_one_of=("max_auc_drop", "min_auc"),
    ),
    "fraction_bias": Declaration(
        "fraction_bias",
        "robustcheck.checks.fraction_bias:FractionBias",
        {
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
            "template_errors": Field(
                "str",
                "da",
                doc="the templates' statistical uncertainty in the fit: iminuit's "
                "Barlow-Beeston-lite method da (default), jsc or asy; none takes the "
                "templates as exact (understates the error when the nominal sample is small; "
                "weighted data then enter as counts)",
                choices=("da", "jsc", "asy", "none"),
            ),
        },
        doc="bias of a template fit of the signal fraction in the alternative sample",
        regression=RegressionFigure(
            "abs_bias", True, "fitted_fraction_error", derive=lambda f: abs(f["bias"])
        ),
        limits=(
            Limit("threshold", "|bias|", lambda f: abs(f["bias"]), "<="),
            Limit("max_pull", "|pull|", lambda f: abs(f["pull"]), "<="),
        ),
        needs_alternative=True,
        requires_one_of=("max_bias", "max_pull"),
    ),
    "property": Declaration(
        "property",
        "robustcheck.checks.property:Property",
        {
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
    "robust_radius": Declaration(
        "robust_radius",
        "robustcheck.checks.robust_radius:RobustRadius",
        {
            "attack": Field("str", doc="name of a min_epsilon [attacks.NAME] table"),
            "min": Field(
                "number",
                doc="the radius quantile must be above it (sigma; at most the attack's "
                "max_epsilon)",
                minimum=0.0,
                exclusive_minimum=True,
            ),
            "quantile": Field(
                "number",
                0.05,
                doc="which quantile of the radii of the correctly classified events",
                minimum=0.0,
                maximum=1.0,
                exclusive_minimum=True,
            ),
            "confidence": Field(
                "number",
                0.95,
                doc="confidence level of the quantile's order-statistic interval",
                minimum=0.0,
                maximum=1.0,
                exclusive_minimum=True,
            ),
            "working_point": WORKING_POINT,
        },
        doc="the quantile of the events' robustness radii (min_epsilon) is above min sigma: "
        "fails when the lower end of its order-statistic interval is not, i.e. when more than "
        "the quantile's share of events is fooled within min sigma (at the confidence level)",
        regression=RegressionFigure("fraction_within_min", lower_is_better=True, error=None),
        # the rule in fooling_rate's form (Comparison has no strict ">" for quantile_low > min)
        limits=(Limit("quantile", "share fooled within min, upper limit", "ci_high", "<="),),
        headline=_robust_radius_headline,
    ),
}
