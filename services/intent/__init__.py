"""The intent service."""
