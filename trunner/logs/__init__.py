"""A job's log: the drain (bytes -> valid UTF-8 -> masking -> lines -> outcome variables -> prefix ->
batches), its memory and disk buffers, the one shipper and the ``Sink`` protocol, all owned by
:mod:`trunner.logs.job_log`."""
