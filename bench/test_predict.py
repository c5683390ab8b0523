"""predict(batch) per model x format x batch size x intra-op threads; one timed call per round."""

from __future__ import annotations

from typing import Any

import numpy as np

from deploybench.bench.harness import PredictorCache, measure, torch_threads
from deploybench.bench.profiles import Case, Profile
from deploybench.targets.catalog import MODELS
from deploybench.targets.zoo import sample_inputs


def test_predict(
    benchmark: Any, predict_case: Case, predictors: PredictorCache, bench_profile: Profile
) -> None:
    case = predict_case
    user = predictors.user.get(case.model)
    spec = user.spec if user is not None else MODELS[case.model]
    batch = user.batch(case.batch_size) if user is not None else sample_inputs(case.model, case.batch_size)
    with torch_threads(case.threads):
        predictor = predictors.get(case.model, case.format, case.threads)
        probs = measure(benchmark, lambda: predictor.predict(batch), case, bench_profile)
    # Sanity of what was timed (never of its speed): one probability row per item.
    assert probs.shape == (case.batch_size, len(spec.class_names))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
