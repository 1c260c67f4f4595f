"""Side effects of usage (SPEC §4 and §5): usage-limit and identity webhooks and
billing meter records.

The processing transaction only writes rows (outbox notices, meter records);
a separate delivery loop (``delivery``) turns them into signed HTTP requests
with retries. Pure rules live apart from I/O: ``triggers`` (what fires),
``billing`` (the meter record), ``payloads`` (envelopes and fan-out),
``signing`` and ``schedule``; ``endpoints`` holds the webhook endpoint
records and their validation; ``sender`` and ``delivery`` do the I/O.
"""
