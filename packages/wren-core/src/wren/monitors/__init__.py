"""The monitors shipped with wren-core.

- :mod:`wren.monitors.storage`: the default, lists job prefixes in storage.

Push monitors are optional extras; each imports its client library only when the monitor is
used, so wren-core works without them:

- :mod:`wren.monitors.rabbitmq`: ``monitoring='rabbitmq'`` (``pip install 'wren-core[rabbitmq]'``).
"""
