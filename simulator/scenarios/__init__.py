"""Data files shipped with the simulator (a package so that wheels include them)."""
