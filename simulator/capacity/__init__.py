"""Capacity planning: calibrate the platform model from the real services, check its predictions
against real open-loop load, and size replicas for a scenario's SLOs."""
