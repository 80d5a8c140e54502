"""socialrec: an online social recommendation service."""

__version__ = "0.1.0"
