"""The "wren" joblib backend: joblib.Parallel runs its batches as wren calls."""
import os

import pytest

joblib = pytest.importorskip("joblib", reason="joblib is not installed (pip install 'wren-core[joblib]')")

import wren.joblib  # noqa: E402  (registers the backend)


def pid_of(x):
    return x * 2, os.getpid()


def fail_key(k):
    return {}[k]


def test_parallel_runs_on_wren():
    with joblib.parallel_config(backend="wren", n_jobs=3):
        out = joblib.Parallel()(joblib.delayed(pid_of)(i) for i in range(20))
    assert [v for v, _ in out] == [2 * i for i in range(20)]
    assert os.getpid() not in {pid for _, pid in out}  # ran in wren's worker processes


def test_n_jobs_minus_one_and_executor_kwargs():
    with joblib.parallel_config(backend="wren", max_workers=2):
        out = joblib.Parallel(n_jobs=-1)(joblib.delayed(abs)(x) for x in range(-5, 5))
    assert out == [abs(x) for x in range(-5, 5)]
    assert wren.joblib.WrenBackend(max_workers=2).effective_n_jobs(-1) == 2


def test_exception_propagates_with_its_type():
    with joblib.parallel_config(backend="wren", n_jobs=2):
        with pytest.raises(KeyError):
            joblib.Parallel()(joblib.delayed(fail_key)(k) for k in ["a", "b"])


def test_register_is_idempotent():
    wren.joblib.register()
    wren.joblib.register()
    with joblib.parallel_config(backend="wren", n_jobs=2):
        assert joblib.Parallel()(joblib.delayed(pid_of)(1) for _ in range(2))[0][0] == 2
