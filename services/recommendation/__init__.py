"""The recommendation service."""
