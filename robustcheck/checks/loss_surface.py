"""Check ``loss_surface``: the mean loss may rise by at most ``max_loss_increase`` within epsilon.

The loss is the negative log-likelihood of each event's true class, averaged over the nominal
sample's events, as each feature in turn moves by up to epsilon sigma (and, with ``grid``, as
two features move together); see ``robustcheck.loss_surface``.
"""

from __future__ import annotations

from robustcheck.checks.base import Check
from robustcheck.errors import SpecError
from robustcheck.loss_surface import LossSurface, loss_surface_of_run
from robustcheck.result import CheckResult


class LossSurfaceCheck(Check):
    def evaluate(self) -> CheckResult:
        o = self.options
        where = f"checks[{self.spec.index}]"
        self.run.log_probs("nominal")  # a model that fails says so clearly, here
        try:
            surface = loss_surface_of_run(
                self.run,
                epsilon=float(o["epsilon"]),
                points=int(o["points"]),
                features=o["features"],
                grid=o["grid"],
                max_events=o["max_events"],
                batch_size=int(o["batch_size"]),
                where=where,
            )
        except SpecError as exc:
            if exc.file is not None:
                raise
            raise SpecError(
                exc.message, file=self.run.spec.path, field=exc.field, fix=exc.fix
            ) from None
        limit = float(o["max_loss_increase"])
        feature, rise, offset = surface.sharpest()
        worst, where_worst = rise, f"{feature} at {offset:+.3g} sigma"
        grid_rise = surface.grid_increase()
        if grid_rise is not None and grid_rise > worst:
            assert surface.grid is not None and surface.grid_features is not None
            i, j = divmod(int(surface.grid.argmax()), surface.grid.shape[1])
            a, b = surface.grid_features
            worst = grid_rise
            where_worst = (
                f"{a} at {surface.offsets[i]:+.3g} and {b} at {surface.offsets[j]:+.3g} sigma"
            )
        passed = worst <= limit
        relative = worst / surface.nominal if surface.nominal > 0 else float("inf")
        summary = (
            f"mean loss rises by {worst:.4g} ({100 * relative:.3g}%) within {surface.epsilon:g} "
            f"sigma, most along {where_worst} {'<=' if passed else '>'} max {limit:g} "
            f"| mean loss {surface.nominal:.4g} at nominal over {surface.n_events:,} events"
        )
        figures: dict[str, float | int | str] = {
            "loss_increase": worst,
            "sharpest_feature": feature,
            "sharpest_offset": offset,
            "sharpest_increase": rise,
            "nominal_loss": surface.nominal,
            "n_events": surface.n_events,
            "epsilon": surface.epsilon,
            "points": len(surface.offsets),
            "threshold": limit,
            "threshold_max_loss_increase": limit,  # read by reports as "max loss increase"
        }
        if grid_rise is not None:
            figures["grid_max_increase"] = grid_rise
        keep_for_report(self.run, self.spec.index, surface)
        return self.result(passed, summary, figures=figures, details=self.table(surface))

    @staticmethod
    def table(surface: LossSurface, rows: int = 8) -> list[str]:
        """The steepest features: the mean loss at -epsilon, 0 and +epsilon, and the rise."""
        order = surface.increase().argsort()[::-1][:rows]
        width = max(len(surface.features[k]) for k in order)
        eps = f"{surface.epsilon:g}"
        lines = [f"{'feature':<{width}}  loss(-{eps})  loss(0)   loss(+{eps})  rise"]
        for k in order:
            curve = surface.profiles[k]
            lines.append(
                f"{surface.features[k]:<{width}}  {curve[0]:<9.4g}  {surface.nominal:<8.4g}  "
                f"{curve[-1]:<10.4g}  {surface.increase()[k]:.3g}"
            )
        return lines


def keep_for_report(run: object, index: int, surface: LossSurface) -> None:
    """The surface's curves and grid, kept for the report's loss-surface plots."""
    from robustcheck.report.extras import remember

    remember(
        run,
        "loss_surface",
        index,
        {
            "quantity": surface.quantity,
            "epsilon": surface.epsilon,
            "offsets": surface.offsets.tolist(),
            "features": list(surface.features),
            "profiles": surface.profiles.tolist(),
            "nominal": surface.nominal,
            "n_events": surface.n_events,
            "grid_features": list(surface.grid_features) if surface.grid_features else None,
            "grid": surface.grid.tolist() if surface.grid is not None else None,
        },
    )
