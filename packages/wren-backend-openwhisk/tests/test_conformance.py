"""wren's compute conformance suite through the OpenWhisk emulator."""
import copy

import pytest

import wren
from wren.testing import ComputeBackendConformance

#: Tests whose worker writes a status record from the entry point's own process (timeouts,
#: dead workers). Each gets an action of its own (another memory size, so another container):
#: a wren-core bug makes later calls in that container fail (see the backend's report).
PARENT_WRITES = {"test_timeout": 512, "test_worker_death_is_reported": 448}


class TestOpenWhiskConformance(ComputeBackendConformance):
    death_report_seconds = 60.0

    @pytest.fixture
    def fexec(self, request, executor_config):
        cfg = copy.deepcopy(executor_config)
        if request.node.originalname in PARENT_WRITES:
            cfg["openwhisk"]["runtime_memory"] = PARENT_WRITES[request.node.originalname]
        with wren.function_executor(config=cfg) as ex:
            yield ex
