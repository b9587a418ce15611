"""Conformance: what a Celery user already runs against a Celery app on Redis keeps working.

Real ``celery`` processes (worker, CLI, Flower), a producer that does not import worker_app, and
canvas, all against the session's private ``redis-server``.
"""
