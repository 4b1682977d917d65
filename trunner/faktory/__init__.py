"""Faktory mode: the Faktory Work Protocol over trio streams.

- :mod:`~trunner.faktory.protocol`: RESP framing, command lines, JSON payloads (no I/O).
- :mod:`~trunner.faktory.client`: server location from the environment, handshake, pool.
- :mod:`~trunner.faktory.decode`: a fetched ``legacy`` job into a RunnerJob (no I/O).
- :mod:`~trunner.faktory.worker`: the job source (FETCH/ACK/FAIL) and heartbeat (BEAT).
- :mod:`~trunner.faktory.sink`: job logs and outcomes pushed to the ``app`` queue.
- :mod:`~trunner.faktory.mode`: ``trunner run --mode faktory``.
- :mod:`~trunner.faktory.definition`: the YAML job description ``trunner enqueue`` pushes.
- :mod:`~trunner.faktory.settings`, :mod:`~trunner.faktory.metrics`: the mode's flags and metrics.
"""
