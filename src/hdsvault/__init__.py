"""hdsvault: a health-data host with the guarantees of the French HDS certification built in."""

__version__ = "0.1.0"
