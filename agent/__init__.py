"""xray-agent: edge agent for X-ray rooms."""

__version__ = "0.1.0"
