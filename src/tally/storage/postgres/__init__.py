"""The PostgreSQL backend: its storage class, schema, the psycopg adapter of the
shared SQL, and its own upkeep (planner statistics, vacuum)."""
