"""Plumbing every ShopTwin service shares, written once: server bootstrap, interceptors, settings,
client channels, TLS, logging, metrics and the benchmark harness."""
