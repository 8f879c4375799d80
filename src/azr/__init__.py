"""Absolute Zero self-play reasoning."""

__version__ = "0.1.0"
