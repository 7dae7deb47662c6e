"""wren.bodies: stored objects made of pieces."""
import pytest


def test_parts_reads_seeks_and_rereads_like_the_joined_bytes():
    """bodies.Parts, the stored body of a job's large arguments: the same bytes as joining
    its parts, read in any block size, from any position, and again after seek(0)."""
    import io
    import random

    from wren.bodies import Parts

    rng = random.Random(7)
    parts = [bytes(rng.randrange(256) for _ in range(n)) for n in (0, 1, 37, 1000, 0, 4096, 3)]
    joined = b"".join(parts)
    body = Parts(parts)
    assert len(body) == len(joined) and body.seekable() and body.readable()
    for block in (1, 7, 64, 5000):
        body.seek(0)
        got = b""
        while chunk := body.read(block):
            got += chunk
        assert got == joined
    for pos in (0, 1, 38, 1037, len(joined) - 1, len(joined), len(joined) + 5):
        assert body.seek(pos) == pos and body.read() == joined[pos:]
    body.seek(-10, io.SEEK_END)
    assert body.read() == joined[-10:]
    with pytest.raises(ValueError):
        body.seek(-1)


def test_a_large_arguments_object_is_stored_from_its_pieces(storage_root):
    """A map's large arguments reach storage as a file over the pickled pieces (no joined copy),
    and a retried upload sends it whole again from the start."""
    import wren
    from wren.bodies import Parts

    calls = []
    with wren.function_executor() as ex:
        inner = ex.storage_backend.inner
        real_put = inner.put_object

        def flaky_put(bucket, key, body):
            if key.endswith("/data.pickle"):
                calls.append(type(body))
                if len(calls) == 1:
                    body.read(1000)  # a connection reset after part of the body was sent
                    raise ConnectionResetError("reset by the test")
            real_put(bucket, key, body)

        inner.put_object = flaky_put
        big = [b"x" * 300_000, b"y" * 300_000]
        assert ex.get_result(ex.map(len, [(b,) for b in big])) == [300_000, 300_000]
    assert calls == [Parts, Parts]
