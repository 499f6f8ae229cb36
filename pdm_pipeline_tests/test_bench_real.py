"""The same-protocol yardsticks of bench-real behave as their definitions say (no real data needed)."""

from __future__ import annotations

import numpy as np

from pdm_pipeline.core.bench_real import t2q_flags


def test_t2q_baseline_flags_about_one_in_a_thousand_normal_rows_and_every_broken_correlation():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(400, 2))
    mixing = rng.normal(size=(2, 6))
    train = latent @ mixing + 0.05 * rng.normal(size=(400, 6))
    normal = rng.normal(size=(20_000, 2)) @ mixing + 0.05 * rng.normal(size=(20_000, 6))
    assert t2q_flags(train, normal).mean() < 0.01  # p = 0.999 limits: rare on rows like the training ones
    broken = normal[:200].copy()
    broken[:, 0] += 1.0  # within the sensor's normal range, but off the correlation the PCA learnt: Q sees it
    assert abs(broken[:, 0].mean()) < 3 * train[:, 0].std()
    assert t2q_flags(train, broken).mean() > 0.95
    far = normal[:200] * 4  # along the learnt components, far out: T² sees it
    assert t2q_flags(train, far).mean() > 0.9
