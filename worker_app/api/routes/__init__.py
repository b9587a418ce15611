"""The routes of ``/api``: jobs, dead letters and queues, one module each."""
