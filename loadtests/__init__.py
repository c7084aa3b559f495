"""Locust load tests built on the simulator's behaviour model."""
