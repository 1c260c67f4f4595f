"""HTTP: the only layer that knows about status codes."""
