"""Edge runtime of the sensor forecasts: Prophet models from JSON (refitted on new rows), or the seasonal naive.

`forecast(recent)` continues the series after the last row of `recent` (raw rows: timestamp, the sensors,
optional unit_id; with units side by side, the unit of the last row): Prophet is refitted on its trailing
window with the stored settings (Prophet cannot update a fitted model), the naive forecast repeats the values
one season back. Without `recent` the forecast continues the training history.
Columns: sensor, ds (datetimes, or cycle/step numbers for index axes), yhat and the 80/95 % bounds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from pdm_pipeline.edge.integrity import resolve_inside
from pdm_pipeline.families.forecast import FAMILY
from pdm_pipeline.families.forecast import series as fs
from pdm_pipeline.families.forecast.settings import NAIVE


class ForecastRuntime:
    model_type = FAMILY.model_type
    inputs: list[str] = []

    def __init__(self, model_dir: Path, card: dict[str, Any]) -> None:
        self.path = Path(model_dir)
        self.card = card
        self.sensors: list[str] = list(card["sensors"])
        self.spec = fs.Spec.from_card(card["spec"])
        self.method = card["method"]
        self.label = card.get("label", self.method)
        self._models: dict[str, Any] | None = None

    @property
    def time_unit(self) -> str:
        return self.spec.time_unit

    def _stored_models(self) -> dict[str, Any]:
        if self._models is None:
            fs.prophet_class()
            from prophet.serialize import model_from_json

            self._models = {
                sensor: model_from_json(resolve_inside(self.path, name, "forecast model").read_text())
                for sensor, name in self.card["files"].items()
            }
        return self._models

    def _spec(self, points: int | None) -> fs.Spec:
        if points is None:
            return self.spec
        from dataclasses import replace

        return replace(self.spec, horizon_points=int(points))

    def horizon_points(self, hours_or_units: float | None) -> int | None:
        """Grid points covering a horizon given in the data's time unit (None: the trained horizon)."""
        if hours_or_units is None:
            return None
        from pdm_pipeline.core.timeaxis import seconds_per_unit

        seconds = float(hours_or_units) * (seconds_per_unit(self.time_unit) or 1.0)
        return max(1, math.ceil(pd.Timedelta(seconds=seconds) / self.spec.step))

    def forecast(self, recent: pd.DataFrame | None = None, horizon: float | None = None) -> pd.DataFrame:
        """Forecast every sensor for `horizon` (the data's time unit; default: the trained horizon). With rows of
        several units, the unit of the last row is continued; the output names it (`unit_id`) when the rows have
        units."""
        if horizon is not None and not horizon > 0:
            raise ValueError(f"forecast horizon must be > 0, got {horizon!r}")
        spec = self._spec(self.horizon_points(horizon))
        parts = []
        if recent is None:
            origin = pd.Timestamp(self.card["history_end"]) + spec.step
            for sensor in self.sensors:
                if self.method == NAIVE:
                    tail = self.card["history_tail"][sensor]
                    values = pd.Series(tail["values"], index=pd.DatetimeIndex(tail["ds"]), dtype=float)
                    fc = fs.naive_forecast(values, origin, spec, self._widths(sensor, spec))
                else:
                    fc = fs.prophet_forecast(
                        self._stored_models()[sensor], spec.horizon(origin), spec.settings.seed,
                        self.card["interval_scales"][sensor],
                    )
                parts.append(fc.assign(sensor=sensor))
        else:
            if recent.empty:
                raise ValueError("recent rows: no rows to forecast from")
            segments = fs.segments(recent, self.sensors, self.time_unit, spec.step, "recent rows")
            segment = segments[-1]
            if len(segments) > 1:  # units side by side: continue the unit of the last row
                from pdm_pipeline.core.schema import UNIT_ID

                last = str(recent[UNIT_ID].iloc[-1])
                segment = next((s for s in segments if s.key == last), segment)
            origin = segment.values.index[-1] + spec.step
            unread = [sensor for sensor in self.sensors if not segment.values[sensor].notna().any()]
            if unread:  # the naive forecast would copy NaN and Prophet has nothing to fit: say it, for both
                raise fs.ForecastSkipped(f"recent rows, sensor(s) {unread}: no value in the recent rows: cannot "
                                         "forecast them")
            refits = {} if self.method == NAIVE else dict(zip(self.sensors, fs.fit_prophet_all(
                [(segment, sensor, origin, spec, "recent rows") for sensor in self.sensors])))
            for sensor in self.sensors:
                if self.method == NAIVE:
                    fc = fs.naive_forecast(segment.values[sensor], origin, spec, self._widths(sensor, spec))
                else:
                    fc = fs.prophet_forecast(refits[sensor], spec.horizon(origin), spec.settings.seed,
                                             self.card["interval_scales"][sensor])
                parts.append(fc.assign(sensor=sensor))
        out = pd.concat(parts, ignore_index=True)[fs.FORECAST_COLUMNS]
        out["ds"] = fs.to_axis(pd.DatetimeIndex(out["ds"]), self.time_unit)
        from pdm_pipeline.core.schema import UNIT_ID

        if recent is not None and UNIT_ID in recent.columns:
            out.insert(0, UNIT_ID, segment.key or str(recent[UNIT_ID].iloc[-1]))  # lifecycles in sequence: the latest
        return out

    def _widths(self, sensor: str, spec: fs.Spec) -> dict[str, list[float]]:
        widths = self.card["naive_half_widths"][sensor]
        n = spec.horizon_points
        return {level: (values + [values[-1]] * n)[:n] for level, values in widths.items()}


def load(model_dir: Path, card: dict[str, Any]) -> ForecastRuntime:
    return ForecastRuntime(model_dir, card)
