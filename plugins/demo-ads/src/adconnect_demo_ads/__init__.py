"""Demo Ads provider plugin for adconnect."""

__version__ = "0.1.0"
