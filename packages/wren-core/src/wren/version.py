"""The version of wren-core (kept in step with every first-party distribution)."""
__version__ = "0.1.0"
