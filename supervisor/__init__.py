"""registry-supervisor: keeps a private Docker registry container running and healthy."""

__version__ = "0.1.0"
