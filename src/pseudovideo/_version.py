"""The package version (one place: the root package, provenance records and --version read it)."""

__version__ = "0.1.0"
