"""wren's compute conformance suite through the OpenWhisk emulator."""
import copy

import pytest

import wren
from wren.testing import ComputeBackendConformance

#: Tests whose worker writes a status record from the entry point's own process (timeouts,
#: dead workers). They get an action of their own (another memory size, so another container):
#: see the note in test_worker_process_survives_parent_side_status_write.
PARENT_WRITES = {"test_timeout", "test_worker_death_is_reported"}


class TestOpenWhiskConformance(ComputeBackendConformance):
    death_report_seconds = 60.0

    @pytest.fixture
    def fexec(self, request, executor_config):
        cfg = copy.deepcopy(executor_config)
        if request.node.originalname in PARENT_WRITES:
            cfg["openwhisk"]["runtime_memory"] = 512
        with wren.function_executor(config=cfg) as ex:
            yield ex
