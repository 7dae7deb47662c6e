"""Programs written for Lithops 3.x (its README examples and the kind of test programs its users
write), run against wren with only the import changed: ``import wren as lithops``.

Each ``program_*`` below is Lithops code as a Lithops user writes it; the tests run it on the
localhost backend and check what Lithops documents it returns.
"""
from __future__ import annotations

import os
import time

import pytest

import wren as lithops  # the only change: was ``import lithops``

CONFIG = {"lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"}}


@pytest.fixture(autouse=True)
def _quiet_peer_config_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="read lithops's config")
        yield


# -- the programs --------------------------------------------------------------------------------

def hello(name):
    return f"Hello {name}!"


def program_readme_call_async():
    with lithops.FunctionExecutor() as fexec:
        fut = fexec.call_async(hello, "World")
        return fut.result()


def double(i):
    return i * 2


def program_readme_map():
    with lithops.FunctionExecutor(config=CONFIG) as fexec:
        fexec.map(double, [1, 2, 3, 4])
        return fexec.get_result()


def my_map_function(x, y):
    return x + y


def my_reduce_function(results):
    total = 0
    for map_result in results:
        total = total + map_result
    return total


def program_map_reduce():
    iterdata = [(1, 1), (2, 2), (3, 3), {"x": 4, "y": 4}]
    with lithops.FunctionExecutor(backend="localhost", storage="localhost") as fexec:
        futures = fexec.map_reduce(my_map_function, iterdata, my_reduce_function)
        result = fexec.get_result(futures)
        stats = [f.stats for f in futures]
    return result, len(futures), stats


def program_map_reduce_extra_args():
    def reduce_with_factor(results, factor):
        return sum(results) * factor

    fexec = lithops.FunctionExecutor(backend="localhost")
    fexec.map_reduce(my_map_function, [1, 2, 3], reduce_with_factor, extra_args=(10,),
                     extra_args_reduce=(2,), spawn_reducer=100)
    result = fexec.get_result()
    fexec.clean()
    return result


def program_extra_args_and_dict_items():
    fexec = lithops.FunctionExecutor()
    fs1 = fexec.map(my_map_function, [1, 2, 3], extra_args=(10,))
    fs2 = fexec.map(my_map_function, [{"x": 1}, {"x": 2}], extra_args={"y": 100})
    return fexec.get_result(fs1), fexec.get_result(fs2)


def program_chained_futures():
    with lithops.FunctionExecutor() as fexec:
        return fexec.map(double, [1, 2, 3]).map(double).map(my_reduce_function_single).get_result()


def my_reduce_function_single(x):
    return x + 1


def slow(x):
    time.sleep(0.05 * x)
    return x


def program_wait_any_and_percentage():
    with lithops.FunctionExecutor() as fexec:
        fs = fexec.map(slow, [0, 1, 2, 3])
        done, not_done = fexec.wait(fs, return_when=lithops.ANY_COMPLETED)
        some = len(done)
        done, not_done = lithops.wait(fs, return_when=75)
        most = len(done)
        fexec.wait(fs)  # ALL_COMPLETED
        return some, most, lithops.get_result(fs)


def my_function_storage(key_name, storage):
    bucket = storage.bucket
    storage.put_object(bucket, key_name, b"Hello from the function")
    return storage.get_object(bucket, key_name).decode()


def program_storage_in_function():
    with lithops.FunctionExecutor() as fexec:
        fexec.call_async(my_function_storage, "lithops-compat/object1")
        return fexec.get_result()


def program_storage_client():
    storage = lithops.Storage()
    bucket = storage.bucket
    storage.put_object(bucket=bucket, key="lithops-compat/test.txt", body="Hello World")
    got = storage.get_object(bucket=bucket, key="lithops-compat/test.txt")
    keys = storage.list_keys(bucket, prefix="lithops-compat/")
    storage.head_bucket(bucket)
    local = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"lithops-compat-{os.getpid()}.txt")
    storage.download_file(bucket, "lithops-compat/test.txt", local)
    storage.upload_file(local, bucket, "lithops-compat/copy.txt")
    os.unlink(local)
    keys = storage.list_keys(bucket, prefix="lithops-compat/")
    cobj = storage.put_cloudobject("cloud object", bucket, "lithops-compat/co")
    back = storage.get_cloudobject(cobj)
    storage.delete_cloudobjects([cobj])
    return got, keys, back


def my_map_cloudobject(x, storage):
    return storage.put_cloudobject(f"partial-{x}")


def my_reduce_cloudobject(results, storage):
    return sorted(storage.get_cloudobject(co).decode() for co in results)


def program_cloudobjects_through_map_reduce():
    with lithops.FunctionExecutor() as fexec:
        fs = fexec.map_reduce(my_map_cloudobject, [1, 2, 3], my_reduce_cloudobject)
        return fexec.get_result(fs)


def count_words(obj):
    return len(obj.data_stream.read().split())


def merge(results):
    return sum(results)


def program_data_processing(bucket, prefix):
    with lithops.FunctionExecutor() as fexec:
        fs = fexec.map_reduce(count_words, f"localhost://{bucket}/{prefix}", merge, obj_chunk_size=64,
                              obj_reduce_by_key=True)
        per_object = fexec.get_result(fs)
        single = fexec.map_reduce(count_words, f"{bucket}/{prefix}", merge, obj_chunk_number=2)
        return per_object, fexec.get_result(single)


def failing(x):
    if x == 2:
        raise ValueError("bad item")
    return x


def program_errors():
    with lithops.FunctionExecutor() as fexec:
        fs = fexec.map(failing, [1, 2, 3])
        partial = fexec.get_result(fs, throw_except=False)
        try:
            fexec.get_result(fs)
        except ValueError as e:
            raised = str(e)
        return partial, raised, [f.error for f in fs], [f.success for f in fs]


def program_localhost_executor():
    with lithops.LocalhostExecutor() as fexec:
        fut = fexec.call_async(hello, ("Localhost",))
        return fexec.get_result(fut), fut.done


def program_include_modules():
    with lithops.FunctionExecutor() as fexec:
        fs = fexec.map(double, [1], include_modules=[], exclude_modules=["numpy"])
        fs2 = fexec.map(double, [2], include_modules=None)
        return fexec.get_result(fs + fs2)


def program_chunksize():
    with lithops.FunctionExecutor() as fexec:
        return fexec.get_result(fexec.map(double, range(10), chunksize=4))


# -- the tests -----------------------------------------------------------------------------------

def test_readme_call_async():
    assert program_readme_call_async() == "Hello World!"


def test_readme_map_with_a_lithops_config_dict():
    assert program_readme_map() == [2, 4, 6, 8]


def test_map_reduce():
    result, n_futures, stats = program_map_reduce()
    assert result == 20 and n_futures == 5 and all("worker_end_tstamp" in s for s in stats)


def test_map_reduce_extra_args():
    assert program_map_reduce_extra_args() == (11 + 12 + 13) * 2


def test_extra_args_and_dict_items():
    assert program_extra_args_and_dict_items() == ([11, 12, 13], [101, 102])


def test_chained_futures():
    assert program_chained_futures() == [5, 9, 13]


def test_wait_any_and_percentage():
    some, most, results = program_wait_any_and_percentage()
    assert some >= 1 and most >= 3 and results == [0, 1, 2, 3]


def test_storage_in_function():
    assert program_storage_in_function() == "Hello from the function"


def test_storage_client():
    got, keys, back = program_storage_client()
    assert got == b"Hello World" and back == b"cloud object"
    assert {"lithops-compat/test.txt", "lithops-compat/copy.txt"} <= set(keys)


def test_cloudobjects_through_map_reduce():
    assert program_cloudobjects_through_map_reduce() == ["partial-1", "partial-2", "partial-3"]


def test_data_processing():
    storage = lithops.Storage()
    prefix = f"lithops-compat-{os.getpid()}-{time.monotonic_ns()}/"
    texts = {"a.txt": "one two three\nfour five\n" * 20, "b.txt": "six seven\n" * 7}
    for name, text in texts.items():
        storage.put_object(storage.bucket, prefix + name, text)
    per_object, total = program_data_processing(storage.bucket, prefix)
    assert per_object == [100, 14] and total == 114


def test_errors():
    partial, raised, error, success = program_errors()
    assert partial == [1, None, 3] and raised == "bad item"
    assert error == [False, True, False]
    # wren's ``success`` is "finished without an error"; Lithops' is also true for failed calls
    assert success == [True, False, True]


def test_localhost_executor():
    assert program_localhost_executor() == ("Hello Localhost!", True)


def test_include_modules():
    assert program_include_modules() == [2, 4]


def test_chunksize():
    assert program_chunksize() == [2 * i for i in range(10)]
