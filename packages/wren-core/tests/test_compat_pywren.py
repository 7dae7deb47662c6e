"""Programs written for PyWren for IBM Cloud 1.x (its README examples and typical user programs),
run against wren with only the import changed: ``import wren as pywren`` (was ``import
pywren_ibm_cloud as pywren``).

They use ``pywren.local_executor()`` (the localhost backend, which wren-core ships); the same
programs with ``pywren.ibm_cf_executor()`` need ``pip install wren-backend-ibmcf``, and without it
say so before anything runs.
"""
from __future__ import annotations

import os
import time
import warnings

import pytest

import wren as pywren  # the only change: was ``import pywren_ibm_cloud as pywren``

# -- the programs --------------------------------------------------------------------------------


def my_function(x):
    return x + 7


def program_readme_call_async():
    pw = pywren.local_executor()
    pw.call_async(my_function, 3)
    result = pw.get_result()
    pw.clean()
    return result


def program_readme_map():
    iterdata = [1, 2, 3, 4]
    pw = pywren.local_executor()
    pw.map(my_function, iterdata, invoke_pool_threads=128)
    return pw.get_result()


def my_map_function(x):
    return x + 7


def my_reduce_function(results):
    total = 0
    for map_result in results:
        total = total + map_result
    return total


def program_readme_map_reduce():
    iterdata = [1, 2, 3, 4]
    pw = pywren.local_executor()
    pw.map_reduce(my_map_function, iterdata, my_reduce_function)
    return pw.get_result()


def program_map_reduce_wait_local():
    pw = pywren.function_executor(backend="localhost", workers=2)
    futures = pw.map_reduce(my_map_function, [1, 2, 3, 4], my_reduce_function, reducer_wait_local=True)
    return pw.get_result(futures), pw.max_workers


def sum_pair(a, b):
    return a + b


def program_tuples_and_dicts():
    pw = pywren.local_executor()
    f1 = pw.map(sum_pair, [(1, 2), (3, 4)])
    f2 = pw.map(sum_pair, [{"a": 1, "b": 2}])
    f3 = pw.map(sum_pair, [1, 2], extra_args=(100,))
    return pw.get_result(f1), pw.get_result(f2), pw.get_result(f3)


def my_function_storage(key, storage):
    storage.put_object(storage.bucket, key, b"data from the function")
    return storage.get_object(storage.bucket, key)


def program_storage_parameter():
    pw = pywren.local_executor()
    pw.call_async(my_function_storage, "pywren-compat/obj")
    return pw.get_result()


def my_map_cobject(x, storage):
    return storage.put_cobject(f"partial {x}")


def my_reduce_cobject(results, storage):
    return sorted(storage.get_cobject(co).decode() for co in results)


def program_cobjects():
    pw = pywren.local_executor()
    pw.map_reduce(my_map_cobject, [1, 2], my_reduce_cobject)
    return pw.get_result()


def my_map_obj(obj):
    return obj.data_stream.read().count(b"\n")


def program_data_partitioning(bucket, prefix):
    pw = pywren.local_executor()
    pw.map_reduce(my_map_obj, f"{bucket}/{prefix}", my_reduce_function, chunk_size=100, reducer_one_per_object=True)
    per_object = pw.get_result()
    pw.map(my_map_obj, f"{bucket}/{prefix}", chunk_n=2)
    return per_object, pw.get_result()


def slow(x):
    time.sleep(0.05 * x)
    return x


def program_wait():
    pw = pywren.local_executor()
    futures = pw.map(slow, [0, 1, 2])
    done, not_done = pw.wait(futures, return_when=pywren.ANY_COMPLETED)
    first = len(done)
    pw.wait(futures, return_when=pywren.ALL_COMPLETED, download_results=True)
    return first, [f.done for f in futures], pw.get_result(futures)


def fail(x):
    raise KeyError(x)


def program_exceptions():
    pw = pywren.local_executor()
    pw.call_async(fail, 1)
    try:
        pw.get_result()
    except KeyError as e:
        return e.args


def program_clean_cobjects():
    storage = pywren.Storage()
    cobjs = [storage.put_cobject(b"1"), storage.put_cobject(b"2")]
    pw = pywren.local_executor()
    pw.clean(cs=cobjs)
    return [storage.list_keys(co.bucket, co.key) for co in cobjs]


def program_config_dict(bucket):
    config = {"pywren": {"storage_bucket": bucket, "storage_backend": "localhost", "compute_backend": "localhost"}}
    pw = pywren.function_executor(config=config)
    pw.call_async(my_function, 1)
    return pw.get_result(), pw.bucket


# -- the tests -----------------------------------------------------------------------------------

def test_readme_call_async():
    assert program_readme_call_async() == 10


def test_readme_map():
    assert program_readme_map() == [8, 9, 10, 11]


def test_readme_map_reduce():
    assert program_readme_map_reduce() == 38


def test_map_reduce_wait_local_and_workers():
    assert program_map_reduce_wait_local() == (38, 2)


def test_tuples_and_dicts():
    assert program_tuples_and_dicts() == ([3, 7], [3], [101, 102])


def test_storage_parameter():
    assert program_storage_parameter() == b"data from the function"


def test_cobjects():
    assert program_cobjects() == ["partial 1", "partial 2"]


def test_data_partitioning():
    storage = pywren.Storage()
    prefix = f"pywren-compat-{os.getpid()}-{time.monotonic_ns()}/"
    storage.put_object(storage.bucket, prefix + "a.csv", b"".join(b"%d,x,y\n" % i for i in range(50)))
    storage.put_object(storage.bucket, prefix + "b.csv", b"1,2\n3,4\n")
    per_object, chunks = program_data_partitioning(storage.bucket, prefix)
    assert per_object == [50, 2]
    assert sum(chunks) == 52 and len(chunks) == 4


def test_wait():
    first, done, results = program_wait()
    assert first >= 1 and all(done) and results == [0, 1, 2]


def test_exceptions_keep_their_type():
    assert program_exceptions() == (1,)


def test_clean_cobjects():
    assert program_clean_cobjects() == [[], []]


def test_config_dict():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert program_config_dict("pywren-bucket") == (8, "pywren-bucket")
    assert any("pywren.storage_bucket -> localhost.storage_bucket" in str(w.message) for w in caught)


def test_ibm_cf_executor_names_the_plugin_to_install(installed_plugin):
    if installed_plugin("compute", "ibm_cf") is None:
        with pytest.raises(pywren.WrenError, match="wren-backend-ibmcf"):
            pywren.ibm_cf_executor()
    else:  # installed (e.g. a venv with every package): without an ibm_cf section it says what to set
        with pytest.raises(pywren.ConfigError, match="config section 'ibm_cf' needs 'region'"):
            pywren.ibm_cf_executor()


def test_list_items_are_not_spread():
    """The deliberate difference: PyWren 1.x spread a list item whose length matched the
    parameters; wren spreads tuples only and says so."""
    pw = pywren.local_executor()
    with pytest.raises(pywren.InvalidInputError, match="make it a tuple"):
        pw.map(sum_pair, [[1, 2]])
