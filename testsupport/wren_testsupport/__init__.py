"""Test-only helpers shared by the packages' test suites (not distributed).

Each module starts a real server on 127.0.0.1 for tests and stops it afterwards. nox puts this
folder on PYTHONPATH; a package's conftest imports what it needs.
"""
