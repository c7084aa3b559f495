"""The bare echo service: the baseline every benchmark measures in the same run."""
