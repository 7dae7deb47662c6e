"""wren's invoker calls a backend's ``invoke`` from as many threads as the backend asks for
(``invoker_threads``), or from one per ``max_workers`` up to 64."""
from __future__ import annotations

import threading
import time
from typing import ClassVar

import pytest

import wren
from wren import plugins
from wren.compute.base import ComputeBackend
from wren.errors import InvocationError


class _RecordingBackend(ComputeBackend):
    """Fails every call (no worker runs) after noting the thread that was handed it; each
    ``invoke`` takes a while, so that a free invoker thread is found busy."""

    name: ClassVar[str] = "threadrec"
    runs_locally: ClassVar[bool] = True
    threads_asked: ClassVar[int | None] = None
    seen: ClassVar[set[str]] = set()

    @property
    def invoker_threads(self) -> int | None:
        return self.threads_asked

    def invoke(self, job, calls, channel):
        type(self).seen.add(threading.current_thread().name)
        time.sleep(0.05)
        for call in calls:
            channel.failed(job.job_key, call.call_id, InvocationError("not run: this backend only records"))


class _Plugin:
    @wren.hookimpl
    def wren_compute_backends(self):
        return [wren.ComputeBackendSpec("threadrec", _RecordingBackend, None)]


@pytest.fixture
def recording_backend():
    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(_Plugin(), name="threadrec-plugin")
    with plugins.use_plugin_manager(pm):
        yield _RecordingBackend


@pytest.mark.parametrize("asked", [2, None])
def test_invoke_runs_on_the_threads_the_backend_asks_for(recording_backend, asked):
    recording_backend.threads_asked = asked
    recording_backend.seen = set()
    with wren.function_executor(config={"wren": {"backend": "threadrec", "storage": "localhost", "max_workers": 40}}) as ex:
        futures = ex.map(abs, range(40))
        ex.wait(futures, throw_except=False)
        assert all(f.error for f in futures)
    if asked:
        assert 1 <= len(recording_backend.seen) <= asked, recording_backend.seen
    else:  # 40 one-call batches, each invoke busy for a while: many threads
        assert len(recording_backend.seen) > 2, recording_backend.seen
