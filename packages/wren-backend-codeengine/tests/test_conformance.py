"""wren's compute conformance suite through the Code Engine API v2 stand-in."""
from wren.testing import ComputeBackendConformance


class TestCodeEngineConformance(ComputeBackendConformance):
    death_report_seconds = 60.0
