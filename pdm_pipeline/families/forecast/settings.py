"""Forecast settings (Prophet hyperparameters and window rules) and the candidates compared on validation.

Every field can be fixed with the expert setting `extra["forecast_<field>"]` (e.g. `--set
extra.forecast_history_points=168`); a fixed field is not varied by the selection. `max_sensors` only chooses
the sensors at training (see train.py) and is not part of what a refit needs (`as_dict`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from pdm_pipeline.errors import SettingsError

EXTRA_PREFIX = "forecast_"
PROPHET = "prophet"
NAIVE = "naive"

# Changes to the base settings compared on validation (the first entry is the base). Trailing window length
# (21 or 7 days of hourly points) and trend type: the choices that matter for a 24 h forecast of a degrading
# machine. The seasonal-naive forecast is always a candidate as well (see train.py).
CANDIDATE_GRID: tuple[dict[str, Any], ...] = (
    {},
    {"history_points": 168},
    {"growth": "flat"},
    {"history_points": 168, "growth": "flat"},
)

# Sensors forecast when the metadata declares no critical sensors (a 150-sensor machine fitted 150 Prophet
# models in 373 s); overridden by `extra["forecast_max_sensors"]`, 0 = every sensor.
MAX_DEFAULT_FORECAST_SENSORS = 8
# Chosen at training only: left out of the settings stored for refits (an edge runtime of an older release
# builds ForecastSettings from them and would refuse a field it does not know).
TRAINING_ONLY = ("max_sensors",)


@dataclass(frozen=True)
class ForecastSettings:
    """Prophet hyperparameters and window rules; stored in the model card and reused for every refit."""

    # Grid points of the trailing window each Prophet is fitted on (504 = 21 days of hourly points).
    history_points: int = 504
    # A lifecycle (unit) that began inside the window replaces the window once it has run this many points.
    min_lifecycle_points: int = 48
    # "linear": piecewise-linear trend; "flat": constant level (plus seasonality and repair shifts).
    growth: str = "linear"
    changepoint_prior_scale: float = 0.05
    changepoint_range: float = 0.8
    seasonality_mode: str = "additive"
    seasonality_prior_scale: float = 10.0
    # Predictive samples per forecast (both interval levels come from the same draws).
    uncertainty_samples: int = 300
    # Forecast windows in the validation period that choose among the candidates and calibrate the intervals
    # (0 = no selection: these settings as they are, with Prophet's own bands).
    validation_windows: int = 4
    # Without declared critical sensors, at most this many sensors are forecast (0 = every sensor): see train.py.
    max_sensors: int = MAX_DEFAULT_FORECAST_SENSORS
    seed: int = 0

    @staticmethod
    def overrides(extra: Mapping[str, Any]) -> dict[str, Any]:
        """The settings fixed by `extra["forecast_<field>"]` (field -> value); raises on unknown keys."""
        names = {f.name for f in fields(ForecastSettings)} - {"seed"}
        out: dict[str, Any] = {}
        for key, value in extra.items():
            if not key.startswith(EXTRA_PREFIX):
                raise SettingsError(
                    f"unknown expert setting extra[{key!r}]; allowed: "
                    + ", ".join(EXTRA_PREFIX + n for n in sorted(names))
                )
            name = key[len(EXTRA_PREFIX):]
            if name not in names:
                allowed = ", ".join(EXTRA_PREFIX + n for n in sorted(names))
                raise SettingsError(f"unknown forecast setting extra[{key!r}]; allowed: {allowed}")
            out[name] = value
        if out:
            replace(ForecastSettings(), **out).validate()
        return out

    @classmethod
    def from_config(cls, config: Any) -> ForecastSettings:
        """Defaults, overridden by `config.extra["forecast_<field>"]`, with `seed` from `config.seed`."""
        return replace(cls(seed=int(config.seed)), **cls.overrides(config.extra)).validate()

    def candidates(self, fixed: Collection[str] = ()) -> list[ForecastSettings]:
        """These settings changed by each CANDIDATE_GRID entry, leaving the `fixed` fields alone (duplicates
        dropped, grid order kept: the first candidate is these settings as they are)."""
        out: list[ForecastSettings] = []
        for entry in CANDIDATE_GRID:
            candidate = replace(self, **{k: v for k, v in entry.items() if k not in fixed})
            if candidate not in out:
                out.append(candidate)
        return out

    def label(self) -> str:
        return f"prophet {self.history_points}pt {self.growth}"

    def validate(self) -> ForecastSettings:
        problems = []
        if not (isinstance(self.history_points, int) and self.history_points >= 10):
            problems.append(f"history_points={self.history_points!r} must be a whole number >= 10")
        if not (isinstance(self.min_lifecycle_points, int) and self.min_lifecycle_points >= 0):
            problems.append(f"min_lifecycle_points={self.min_lifecycle_points!r} must be a whole number >= 0")
        if self.growth not in ("linear", "flat"):
            problems.append(f"growth={self.growth!r} must be 'linear' or 'flat'")
        if not (isinstance(self.changepoint_prior_scale, (int, float)) and self.changepoint_prior_scale > 0):
            problems.append(f"changepoint_prior_scale={self.changepoint_prior_scale!r} must be > 0")
        if not (isinstance(self.changepoint_range, (int, float)) and 0 < self.changepoint_range <= 1):
            problems.append(f"changepoint_range={self.changepoint_range!r} must be in (0, 1]")
        if self.seasonality_mode not in ("additive", "multiplicative"):
            problems.append(f"seasonality_mode={self.seasonality_mode!r} must be 'additive' or 'multiplicative'")
        if not (isinstance(self.seasonality_prior_scale, (int, float)) and self.seasonality_prior_scale > 0):
            problems.append(f"seasonality_prior_scale={self.seasonality_prior_scale!r} must be > 0")
        if not (isinstance(self.uncertainty_samples, int) and self.uncertainty_samples >= 100):
            problems.append(f"uncertainty_samples={self.uncertainty_samples!r} must be >= 100 (95 % bands need draws)")
        if not (isinstance(self.validation_windows, int) and self.validation_windows >= 0):
            problems.append(f"validation_windows={self.validation_windows!r} must be a whole number >= 0")
        if not (isinstance(self.max_sensors, int) and not isinstance(self.max_sensors, bool) and self.max_sensors >= 0):
            problems.append(f"max_sensors={self.max_sensors!r} (extra.forecast_max_sensors) must be a whole number >= 0 "
                            "(0 = every sensor)")
        if problems:
            raise SettingsError("invalid forecast settings: " + "; ".join(problems))
        return self

    def as_dict(self) -> dict[str, Any]:
        """What a refit needs (stored in the spec card): every field but TRAINING_ONLY."""
        return {k: v for k, v in asdict(self).items() if k not in TRAINING_ONLY}
