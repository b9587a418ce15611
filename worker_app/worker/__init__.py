"""The worker process: what ``celery -A worker_app worker`` adds to Celery's own.

- :mod:`.consumer`: the consumer, with guards for messages that are not runnable jobs;
- :mod:`.request`: the per-job request: start marks, deaths of pool processes, timeouts;
- :mod:`.steps`: bootsteps for heartbeats, lease renewal, sweeps, delays and stats;
- :mod:`.shutdown`: a shutdown that gives back unstarted jobs and fits the orchestrator's grace;
- :mod:`.health`: the heartbeat and ``worker-app health``;
- :mod:`.stats`: the worker's in-memory counters.

The app names these classes by their dotted paths, so loading the app never imports this
package. It may import :mod:`worker_app.dlq`, :mod:`worker_app.jobs`, the broker and the root
modules.
"""
