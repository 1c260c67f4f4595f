"""tally: self-hostable event ingestion and usage metering speaking the Schematic API."""

__version__ = "0.1.0"
