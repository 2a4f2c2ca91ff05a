"""spothub: a serverless control plane that keeps GPU work on the cheapest spot capacity across regions."""

__version__ = "0.1.0"
