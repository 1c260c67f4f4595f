"""Metering: period arithmetic (pure) and usage counters."""
