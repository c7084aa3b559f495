"""The ``shoptwin`` command line."""
