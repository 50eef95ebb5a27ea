"""Territoire: the territorial data platform a local authority runs itself."""

__version__ = "0.1.0"
