"""The client's machinery behind :class:`wren.FunctionExecutor`, one concern per module:

- :mod:`~wren.client.submission`: checking a user's call and packing it into a job (function and
  data in storage, the :class:`~wren.records.Job` and :class:`~wren.records.Call` records).
- :mod:`~wren.client.dispatch`: handing calls to the backend (directly, or through the
  :mod:`~wren.client.invoker` that caps calls in flight) and to the monitor.
- :mod:`~wren.client.calls`: the futures of an executor and the channel backends and monitors
  report through.
- :mod:`~wren.client.attempts`: retries, speculative copies and the watchdog for lost calls.
- :mod:`~wren.client.waiting`: ``wait``/``get_result`` and the progress bar.
- :mod:`~wren.client.journal`: the local record that lets a new client reattach.
- :mod:`~wren.client.reporting`: logs, plots and job summaries.
- :mod:`~wren.client.mapreduce`: ``map_reduce`` (when the reducer starts, what ``get_result`` returns).
- :mod:`~wren.client.chaining` and :mod:`~wren.client.futures_list`: futures as arguments, ``FuturesList``.
- :mod:`~wren.client.compat`: the peers' (PyWren for IBM Cloud, Lithops) spellings of options.
"""
