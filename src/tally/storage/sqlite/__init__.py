"""The SQLite backend: its storage class, schema, WAL checkpoints and processing
as stored (what only SQLite runs)."""
