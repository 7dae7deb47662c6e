"""wren's compute conformance suite on ibm_cf (IAM namespace) through the OpenWhisk emulator."""
import copy

import pytest

import wren
from wren.testing import ComputeBackendConformance

#: see wren-backend-openwhisk's test_conformance: their own action (another memory size)
PARENT_WRITES = {"test_timeout": 512, "test_worker_death_is_reported": 640}


class TestIBMCloudFunctionsConformance(ComputeBackendConformance):
    death_report_seconds = 60.0

    @pytest.fixture
    def fexec(self, request, executor_config):
        cfg = copy.deepcopy(executor_config)
        if request.node.originalname in PARENT_WRITES:
            cfg["ibm_cf"]["runtime_memory"] = PARENT_WRITES[request.node.originalname]
        with wren.function_executor(config=cfg) as ex:
            yield ex
