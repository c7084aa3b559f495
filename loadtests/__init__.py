"""Locust load tests built on the simulator's behaviour model.

Modules that import Locust (and so monkey-patch the process with gevent) are only
``loadtests.locustfile`` and ``loadtests.users``; everything else (shapes, arrivals, SLO verdicts,
workloads, the command) is plain Python that tests and the ``shoptwin`` process import safely.
"""
