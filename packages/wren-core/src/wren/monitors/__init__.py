"""Push monitors shipped with wren-core as optional extras.

Each module here imports its client library only when the monitor is used, so wren-core works
without them:

- :mod:`wren.monitors.rabbitmq`: ``monitoring='rabbitmq'`` (``pip install 'wren-core[rabbitmq]'``).
"""
