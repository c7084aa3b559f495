"""Data shipped with the intent service (see README.md here for source and licence)."""
