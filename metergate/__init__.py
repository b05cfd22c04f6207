"""metergate: meter-data gateway for water utilities."""

__version__ = "0.1.0"
