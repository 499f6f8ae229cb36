"""Runtime of the tabular families (classifier, RUL regressor): a native booster file, or an AutoGluon predictor.

The pi preset trains one LightGBM (XGBoost, CatBoost) model inside AutoGluon; training exports that model's
NATIVE file (`model.txt`, `model.json`, `model.cbm`) after checking that it predicts exactly as AutoGluon does,
and the AutoGluon directory (pickles) is not kept. Evaluation, champion re-scoring and the edge all predict
through this module, so what is measured is what ships. Only a best model that is not a single booster (the
seed preset's bagged ensembles) keeps the AutoGluon predictor (format "autogluon"), and then loading it needs
AutoGluon.

Rows without time order are fitted by k-fold cross-fitting (see `families/classifier/train.py`): the card's
`bag` lists one native file per fold (in the directory `model_file`) with the input columns it takes, and the
prediction is their mean, exactly as AutoGluon's bagged models predict.

Inputs are the card's `input_columns` in order; `constant_inputs` (pooled fleet models: the machine's one-hot
identity; null = missing, the other members' copies of a feature) and `copied_inputs` (the machine's own copy
of a feature -> that feature) are filled in by the runtime, so callers pass the feature columns only
(`feature_inputs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pdm_pipeline.edge.integrity import resolve_inside

AUTOGLUON_FORMAT = "autogluon"
# AutoGluon model class name -> (format, file name).
NATIVE_FORMATS: dict[str, tuple[str, str]] = {
    "LGBModel": ("lightgbm", "model.txt"),
    "XGBoostModel": ("xgboost", "model.json"),
    "CatBoostModel": ("catboost", "model.cbm"),
}


class NativeModel:
    """A LightGBM/XGBoost/CatBoost model loaded from its native file, without AutoGluon.

    `predict(matrix)` takes the input columns in order and returns P(class 1) for a classifier, the raw
    prediction for a regressor.
    """

    def __init__(self, fmt: str, path: Path, classifier: bool) -> None:
        self.format = fmt
        self.path = Path(path)
        self.classifier = classifier
        if fmt == "lightgbm":
            import lightgbm

            self._model = lightgbm.Booster(model_file=str(path))
        elif fmt == "xgboost":
            try:
                import xgboost
            except ImportError:
                raise ImportError(f"{path}: this model is an XGBoost booster: pip install xgboost") from None
            self._model = xgboost.Booster()
            self._model.load_model(str(path))
        elif fmt == "catboost":
            try:
                import catboost
            except ImportError:
                raise ImportError(f"{path}: this model is a CatBoost model: pip install catboost") from None
            cls = catboost.CatBoostClassifier if classifier else catboost.CatBoostRegressor
            self._model = cls()
            self._model.load_model(str(path))
        else:
            raise ValueError(f"unknown native model format {fmt!r}; expected lightgbm, xgboost or catboost")

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if self.format == "lightgbm":
            # One thread: the boosters are small and OpenMP start-up dominates one-row predictions.
            out = self._model.predict(matrix, num_threads=1)
        elif self.format == "xgboost":
            # AutoGluon feeds XGBoost a scipy CSR matrix built from the frame, where a 0.0 is not stored and so
            # is MISSING to XGBoost, in training as in prediction: the same here, or zeros take other branches.
            out = self._model.inplace_predict(np.where(matrix == 0.0, np.nan, matrix))
        elif self.classifier:
            out = self._model.predict_proba(matrix, thread_count=1)[:, 1]
        else:
            out = self._model.predict(matrix, thread_count=1)
        return np.asarray(out, dtype=float)


class BaggedNativeModel:
    """The mean prediction of several native boosters of one format (the folds of a cross-fitted model); each
    takes its own subset of the input columns (`columns`: positions in the card's `input_columns`)."""

    def __init__(self, fmt: str, directory: Path, members: list[dict[str, Any]], classifier: bool) -> None:
        if not members:
            raise ValueError(f"{directory}: a bagged model needs at least one member")
        self.format = fmt
        self.members = [
            (NativeModel(fmt, resolve_inside(directory, m["file"], "bagged model member"), classifier),
             np.asarray(m["columns"], dtype=np.intp))
            for m in members
        ]

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        total = np.zeros(len(matrix), dtype=float)
        for model, columns in self.members:
            total += model.predict(matrix[:, columns])
        return total / len(self.members)


class _AutoGluonModel:
    """The fallback: an AutoGluon predictor directory (needs autogluon.tabular installed)."""

    def __init__(self, path: Path, columns: list[str], classifier: bool) -> None:
        try:
            from autogluon.tabular import TabularPredictor
        except ImportError:
            raise ImportError(
                f"{path}: this model ships as an AutoGluon predictor (not a single booster): "
                "pip install 'autogluon.tabular' to load it"
            ) from None
        self.format = AUTOGLUON_FORMAT
        self.columns = columns
        self.classifier = classifier
        self.predictor = TabularPredictor.load(str(path), verbosity=0)
        self.predictor.persist()

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame(matrix, columns=self.columns)
        if self.classifier:
            return self.predictor.predict_proba(frame, as_multiclass=False).to_numpy(dtype=float)
        return self.predictor.predict(frame).to_numpy(dtype=float)


class TabularModel:
    """A classifier or regressor from its directory and card: input assembly + the model."""

    def __init__(self, model_dir: Path, card: dict[str, Any], classifier: bool) -> None:
        self.card = card
        self.input_columns: list[str] = list(card["input_columns"])
        constants: dict[str, float] = {
            k: (np.nan if v is None else float(v)) for k, v in (card.get("constant_inputs") or {}).items()}
        copied: dict[str, str] = dict(card.get("copied_inputs") or {})
        self.feature_inputs = [c for c in self.input_columns if c not in constants and c not in copied]
        unknown = sorted(source for source in copied.values() if source not in self.feature_inputs)
        if unknown:
            raise ValueError(f"model card: copied_inputs name columns that are not feature inputs: {unknown[:5]}")
        self._constants = constants
        self._copies = [(self.input_columns.index(c), self.feature_inputs.index(s)) for c, s in copied.items()]
        self._feature_positions = np.array(
            [i for i, c in enumerate(self.input_columns) if c not in constants and c not in copied], dtype=np.intp
        )
        fmt = card["format"]
        path = resolve_inside(model_dir, card["model_file"], "model")
        if fmt == AUTOGLUON_FORMAT:
            self.model: NativeModel | BaggedNativeModel | _AutoGluonModel = _AutoGluonModel(
                path, self.input_columns, classifier)
        elif card.get("bag"):
            self.model = BaggedNativeModel(fmt, path, card["bag"]["members"], classifier)
        else:
            self.model = NativeModel(fmt, path, classifier)

    @property
    def format(self) -> str:
        return self.card["format"]

    def assemble(self, features: np.ndarray) -> np.ndarray:
        """The model's input matrix from the feature columns (`feature_inputs` order) plus the constants and
        the copies."""
        if not self._constants and not self._copies:
            return features
        matrix = np.empty((len(features), len(self.input_columns)), dtype=float)
        matrix[:, self._feature_positions] = features
        for i, column in enumerate(self.input_columns):
            if column in self._constants:
                matrix[:, i] = self._constants[column]
        for i, source in self._copies:
            matrix[:, i] = features[:, source]
        return matrix

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict(self.assemble(np.asarray(features, dtype=float)))
