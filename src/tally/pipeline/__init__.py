"""The processing pipeline: pending events → companies, users, memberships,
feature attribution and usage counters (SPEC §4)."""
