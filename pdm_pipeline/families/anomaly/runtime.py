"""Edge runtime of the anomaly ensemble: every detector scored with numpy from plain arrays (no pickle).

Stored as `anomaly_model.npz` (arrays only, loaded with allow_pickle=False) + `model_card.json` (names,
weights, thresholds, alarm rule). Detectors (fitted on normal train rows, inputs imputed with train medians
and standardised with the train-normal mean/std; every raw score oriented so that higher = more anomalous):

- isolation_forest: 2^(-mean path length / c(max_samples)) from the exported trees (Liu et al., 2008);
- one_class_svm: -sum_i alpha_i exp(-gamma |x - sv_i|^2) (sklearn's score_samples, negated);
- local_outlier_factor: the novelty LOF of x against the stored fit rows (k nearest by brute force);
- zscore: max |z| over the inputs;
- hotelling_t2 / spe_q: PCA on the standardised fit rows (components explaining 90 % of the variance):
  T^2 = sum t_k^2 / lambda_k inside the model, Q = squared distance to the PCA plane;
- autoencoder: mean squared reconstruction error of a small tanh MLP trained to reproduce its input.

Each raw score goes through the empirical CDF of the same detector on held-out normal reference rows (mid-rank,
in [0, 1]); the ensemble score is the weighted mean (weights chosen on val). A row is above the threshold when
its ensemble score >= `threshold`; the alarm (`anomaly_flag`) switches on after `on_samples` consecutive rows
above it and off after `off_samples` consecutive rows below it, per unit, in row order (a debounced alarm: a
single noisy row neither raises nor clears it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.families.anomaly import ANOMALY_FLAG, ANOMALY_SCORE, ENSEMBLE, FAMILY

MODEL_FILE = "anomaly_model.npz"
_CHUNK = 2048


def _ecdf(reference_sorted: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mid-rank empirical CDF of `values` against a sorted reference sample, in [0, 1]."""
    below = np.searchsorted(reference_sorted, values, side="left")
    at_or_below = np.searchsorted(reference_sorted, values, side="right")
    return (below + at_or_below) / (2.0 * len(reference_sorted))


def average_path_length(n_samples: np.ndarray) -> np.ndarray:
    """c(n), the average path length of an unsuccessful search in a binary tree of n points (Liu et al., 2008)."""
    n = np.asarray(n_samples, dtype=np.float64)
    out = np.where(n == 2, 1.0, 0.0)
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of a and b (clipped at 0)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


class _IsolationForest:
    def __init__(self, a: dict[str, np.ndarray]) -> None:
        # Trees stacked into one node table; `roots` are each tree's first node.
        self.left, self.right = a["if_left"], a["if_right"]
        self.feature, self.threshold, self.value = a["if_feature"], a["if_threshold"], a["if_value"]
        self.roots = a["if_roots"]
        self.depth = int(a["if_max_depth"][0])
        self.normaliser = float(a["if_normaliser"][0])

    def __call__(self, z: np.ndarray) -> np.ndarray:
        # sklearn compares float32 inputs with the float64 thresholds: the same here, or ties split differently.
        z = z.astype(np.float32).astype(np.float64)
        rows = np.arange(len(z))[:, None]
        node = np.broadcast_to(self.roots, (len(z), len(self.roots))).copy()
        for _ in range(self.depth + 1):
            leaf = self.left[node] < 0
            if leaf.all():
                break
            go_left = z[rows, np.where(leaf, 0, self.feature[node])] <= self.threshold[node]
            node = np.where(leaf, node, np.where(go_left, self.left[node], self.right[node]))
        return np.power(2.0, -self.value[node].sum(axis=1) / self.normaliser)


class _OneClassSVM:
    def __init__(self, a: dict[str, np.ndarray]) -> None:
        self.vectors, self.coef, self.gamma = a["svm_vectors"], a["svm_coef"], float(a["svm_gamma"][0])

    def __call__(self, z: np.ndarray) -> np.ndarray:
        out = np.empty(len(z))
        for start in range(0, len(z), _CHUNK):
            part = z[start:start + _CHUNK]
            out[start:start + _CHUNK] = np.exp(-self.gamma * _sq_distances(part, self.vectors)) @ self.coef
        return -out


class _LocalOutlierFactor:
    def __init__(self, a: dict[str, np.ndarray]) -> None:
        self.fit, self.kdist, self.lrd = a["lof_fit"], a["lof_kdist"], a["lof_lrd"]
        self.k = int(a["lof_k"][0])

    def __call__(self, z: np.ndarray) -> np.ndarray:
        out = np.empty(len(z))
        for start in range(0, len(z), _CHUNK):
            part = z[start:start + _CHUNK]
            distances = np.sqrt(_sq_distances(part, self.fit))
            nearest = np.argpartition(distances, self.k - 1, axis=1)[:, : self.k]
            near = np.take_along_axis(distances, nearest, axis=1)
            reach = np.maximum(near, self.kdist[nearest])
            lrd = 1.0 / (reach.mean(axis=1) + 1e-10)
            out[start:start + _CHUNK] = (self.lrd[nearest] / lrd[:, None]).mean(axis=1)
        return out


class _PCA:
    def __init__(self, a: dict[str, np.ndarray]) -> None:
        self.components, self.variance = a["pca_components"], a["pca_variance"]

    def project(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = z @ self.components.T
        t2 = (t**2 / self.variance).sum(axis=1)
        q = ((z - t @ self.components) ** 2).sum(axis=1)
        return t2, q


class _Autoencoder:
    def __init__(self, a: dict[str, np.ndarray]) -> None:
        n = int(a["ae_layers"][0])
        self.weights = [a[f"ae_w{i}"] for i in range(n)]
        self.biases = [a[f"ae_b{i}"] for i in range(n)]

    def reconstruct(self, z: np.ndarray) -> np.ndarray:
        h = z
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.tanh(h)
        return h

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return ((self.reconstruct(z) - z) ** 2).mean(axis=1)


class AnomalyRuntime:
    """The loaded ensemble: `score` (per detector + ensemble), `predict` (score and debounced alarm)."""

    model_type = FAMILY.model_type

    def __init__(self, card: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.card = card
        self.inputs: list[str] = list(card["inputs"])
        self.detectors: list[str] = list(card["detectors"])
        self.weights = np.array([float(card["weights"][d]) for d in self.detectors])
        self.threshold = float(card["threshold"])
        self.detector_thresholds: dict[str, float] = {k: float(v) for k, v in card["detector_thresholds"].items()}
        self.on_samples = int(card["alarm"]["on_samples"])
        self.off_samples = int(card["alarm"]["off_samples"])
        self.fill = arrays["fill"]
        self.mean = arrays["mean"]
        self.scale = arrays["scale"]
        self.reference = {d: arrays[f"ref_{d}"] for d in self.detectors}
        self._iforest = _IsolationForest(arrays) if "if_left" in arrays else None
        self._svm = _OneClassSVM(arrays) if "svm_vectors" in arrays else None
        self._lof = _LocalOutlierFactor(arrays) if "lof_fit" in arrays else None
        self._pca = _PCA(arrays) if "pca_components" in arrays else None
        self._ae = _Autoencoder(arrays) if "ae_layers" in arrays else None

    def standardized(self, features: np.ndarray) -> np.ndarray:
        x = np.array(features, dtype=np.float64, copy=True)
        x[~np.isfinite(x)] = np.nan
        rows, cols = np.nonzero(np.isnan(x))
        x[rows, cols] = self.fill[cols]
        return (x - self.mean) / self.scale

    def raw_scores(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Each detector's raw score (higher = more anomalous)."""
        z = self.standardized(features)
        out: dict[str, np.ndarray] = {}
        t2 = q = None
        for name in self.detectors:
            if name == "isolation_forest" and self._iforest is not None:
                out[name] = self._iforest(z)
            elif name == "one_class_svm" and self._svm is not None:
                out[name] = self._svm(z)
            elif name == "local_outlier_factor" and self._lof is not None:
                out[name] = self._lof(z)
            elif name == "zscore":
                out[name] = np.abs(z).max(axis=1)
            elif name in ("hotelling_t2", "spe_q") and self._pca is not None:
                if t2 is None or q is None:
                    t2, q = self._pca.project(z)
                out[name] = t2 if name == "hotelling_t2" else q
            elif name == "autoencoder" and self._ae is not None:
                out[name] = self._ae(z)
            else:
                raise ValueError(f"anomaly model: detector {name!r} in the card has no arrays in the model file")
        return out

    def score(self, features: np.ndarray) -> pd.DataFrame:
        """Normalised score per detector (reference CDF, in [0, 1]) and their weighted mean, "ensemble"."""
        raw = self.raw_scores(features)
        normalised = np.column_stack([_ecdf(self.reference[d], raw[d]) for d in self.detectors])
        ensemble = normalised @ self.weights / self.weights.sum()
        return pd.DataFrame(np.column_stack([normalised, ensemble]), columns=[*self.detectors, ENSEMBLE])

    # The alarm has a state: the edge predictor passes which rows it can see (`seen`) and asks
    # `needs_earlier_rows` before it trusts a tail of the input.
    stateful = True

    def alarm(self, above: np.ndarray, units: np.ndarray | None = None, seen: np.ndarray | None = None) -> np.ndarray:
        """Debounced alarm per unit, in row order: on after `on_samples` rows above, off after `off_samples` below
        (rows not `seen` hold the state)."""
        return debounce(above, units, self.on_samples, self.off_samples, seen)

    def predict(self, features: np.ndarray, units: np.ndarray | None = None,
                seen: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Score and alarm per row. `seen`: False for rows whose sensors cannot be seen (no reading, a sensor
        silent for its window): their fill values say nothing, so they neither raise nor clear the alarm."""
        ensemble = self.score(features)[ENSEMBLE].to_numpy()
        return {ANOMALY_SCORE: ensemble, ANOMALY_FLAG: self.alarm(ensemble >= self.threshold, units, seen)}

    def needs_earlier_rows(self, outputs: dict[str, np.ndarray], units: np.ndarray,
                           seen: np.ndarray | None = None) -> bool:
        """Whether some unit's alarm at its last row could differ with the rows before these (the alarm has a
        state): not when every unit has, among these rows (those seen), `on_samples` consecutive rows above the
        threshold or `off_samples` below, since such a run sets the state whatever came before it."""
        above = np.asarray(outputs[ANOMALY_SCORE]) >= self.threshold
        units = np.asarray(units)
        seen = np.ones(len(above), dtype=bool) if seen is None else np.asarray(seen, dtype=bool)
        for unit in np.unique(units):
            flags = above[(units == unit) & seen]
            if not len(flags):
                return True
            change = np.flatnonzero(np.r_[True, flags[1:] != flags[:-1], True])
            runs, values = np.diff(change), flags[change[:-1]]
            if not ((runs[values] >= self.on_samples).any() or (runs[~values] >= self.off_samples).any()):
                return True
        return False


def debounce(above: np.ndarray, units: np.ndarray | None, on_samples: int, off_samples: int,
             seen: np.ndarray | None = None) -> np.ndarray:
    """0/1 alarm: switches on at the `on_samples`-th consecutive True, off at the `off_samples`-th consecutive
    False, restarting (off) at every new unit; causal (row t depends on rows <= t of its unit only). Rows not
    `seen` hold the state and leave the runs as they were (they neither raise nor clear the alarm)."""
    above = np.asarray(above, dtype=bool)
    units = np.zeros(len(above), dtype=np.int64) if units is None else np.asarray(units)
    seen = np.ones(len(above), dtype=bool) if seen is None else np.asarray(seen, dtype=bool)
    out = np.zeros(len(above), dtype=np.int8)
    if on_samples <= 1 and off_samples <= 1 and seen.all():
        return above.astype(np.int8)
    # each unit's rows in their order, one unit after the other (rows of several units may come interleaved)
    units = pd.factorize(units, use_na_sentinel=False)[0]
    order = np.argsort(units, kind="stable")
    state, run_on, run_off, previous = False, 0, 0, None
    for i, flag, unit, visible in zip(order, above[order], units[order], seen[order]):
        if unit != previous:
            state, run_on, run_off, previous = False, 0, 0, unit
        if not visible:
            pass
        elif flag:
            run_on, run_off = run_on + 1, 0
            if not state and run_on >= on_samples:
                state = True
        else:
            run_off, run_on = run_off + 1, 0
            if state and run_off >= off_samples:
                state = False
        out[i] = state
    return out


def load(model_dir: Path, card: dict[str, Any]) -> AnomalyRuntime:
    from pdm_pipeline.edge.integrity import resolve_inside

    file = resolve_inside(model_dir, card.get("model_file", MODEL_FILE), "anomaly model")
    with np.load(file, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    return AnomalyRuntime(card, arrays)


def load_dir(model_dir: Path) -> AnomalyRuntime:
    """Load from a directory's card (after its manifest was verified)."""
    card = json.loads((Path(model_dir) / "model_card.json").read_text())
    return load(model_dir, card)
