"""wren's compute conformance suite through the Kubernetes API stand-in and its pods."""
import copy

import pytest

import wren
from wren.testing import ComputeBackendConformance

#: Tests whose worker writes a status record from the entry point's own process (timeouts,
#: dead workers) get a service of their own (another memory size, so another pod), as the
#: openwhisk backend's suite does: the pod serving the other tests then never forks children
#: from a process that has used a storage client.
PARENT_WRITES = {"test_timeout", "test_worker_death_is_reported"}


class TestKnativeConformance(ComputeBackendConformance):
    death_report_seconds = 60.0

    @pytest.fixture
    def fexec(self, request, executor_config):
        cfg = copy.deepcopy(executor_config)
        if request.node.originalname in PARENT_WRITES:
            cfg["knative"]["runtime_memory"] = 512
        with wren.function_executor(config=cfg) as ex:
            yield ex
