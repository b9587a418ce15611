"""Specifications of the product as it runs: real workers, beat, the API, Flower, PostgreSQL,
and the faults they must survive (``-m fault``) and Celery's own clients (``-m conformance``)."""
