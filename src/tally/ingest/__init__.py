"""Pure ingestion: parse request bodies into typed events and rule on them.

Nothing here does I/O; ``now`` is always passed in.
"""
