"""The compute conformance suite on real worker containers."""
from __future__ import annotations

import pytest

from wren.testing import ComputeBackendConformance


class TestDockerConformance(ComputeBackendConformance):
    death_report_seconds = 30.0

    @pytest.fixture
    def executor_config(self, runtime_image):
        return {
            "wren": {"backend": "docker", "storage": "localhost", "monitor_interval": 0.5},
            "docker": {"runtime": runtime_image, "pool_size": 2},
        }
