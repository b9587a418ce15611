"""Every Redis key worker_app owns, with its type, unit and why it exists.

All live under one prefix so an operator can tell them from Celery's and kombu's keys
(``celery-task-meta-*``, the queue lists, ``unacked``) at a glance.
"""

from __future__ import annotations

PREFIX = "worker_app"

# Messages ---------------------------------------------------------------------------------
# The queue lists are kombu's: ``<queue>`` and ``<queue>\x06\x16<step>`` per priority step.
#: HASH delivery tag -> JSON ``[envelope, exchange, queue]`` of every message a worker holds
#: (taken off its list, not yet acked). kombu's Redis transport names it so; keeping the name
#: lets a release before this one, and kombu's own tools, read what is held.
HELD = "unacked"
#: ZSET delivery tag -> lease (Unix seconds the holder last renewed it); a lease older than
#: ASYNQ_VISIBILITY_TIMEOUT belongs to a lost worker and is restored by the sweep.
HELD_INDEX = "unacked_index"
#: HASH tag -> "<list>\n<bytes>" of items taken off a list that are no message envelope, held
#: (their tags in HELD_INDEX too) until the worker has dead-lettered them.
HELD_RAW = f"{PREFIX}:held:raw"
#: Prefix of the tags of HELD_RAW ("raw:" + SHA-1 of the bytes).
RAW_TAG = "raw:"
#: LIST per queue list: wake-up tokens. A publish onto a list shorter than WAKE_CAP pushes one;
#: an idle worker blocks on the tokens of its lists (BLPOP), never on the lists themselves, so
#: the message itself is only ever taken by the fetch script, which holds it in the same step.
#: Tokens carry nothing: one lost with a killed worker costs at most IDLE_WAIT of latency.
WAKE = f"{PREFIX}:wake:"
WAKE_CAP = 64
#: Seconds an idle worker waits for a token before it looks at its lists anyway: the latency
#: of a message from a producer that leaves no token (a plain Celery app).
IDLE_WAIT = 1
#: STRING per visibility timeout (seconds, appended): held by the one worker that searches for
#: records left without a message, once per timeout; expires with that period.
ORPHAN_SEARCH = f"{PREFIX}:sweep:orphans"
#: STRING per task id, Celery's Redis result backend's key (and pub/sub channel) of a result:
#: written only for jobs whose producer is a plain Celery app, so its AsyncResult.get() returns.
CELERY_RESULT = "celery-task-meta-"

# Dead-letter queue -------------------------------------------------------------------------
#: STRING, JSON of one entry, keyed by task id so writing the same failure twice leaves one.
DLQ_ENTRY = f"{PREFIX}:dlq:entry:"
#: ZSET task id -> failed at (Unix seconds): newest-first listing, retention and size trimming.
DLQ_INDEX = f"{PREFIX}:dlq:index"
#: ZSET per filter value (``task``, ``reason``, ``queue``, ``fingerprint``), scored like the
#: index, so a filtered page never reads entries it does not return.
DLQ_BY = f"{PREFIX}:dlq:by:"
#: SET per dimension of the values seen, for ``stats``.
DLQ_VALUES = f"{PREFIX}:dlq:values:"
#: LIST of JSON audit records (requeue, delete, purge), newest first, capped.
DLQ_HISTORY = f"{PREFIX}:dlq:history"
DLQ_HISTORY_MAX = 10_000
#: INTEGER, entries trimmed by retention or size since the store was created.
DLQ_TRIMMED = f"{PREFIX}:dlq:trimmed"

# Poison pills ------------------------------------------------------------------------------
#: INTEGER per job id: how many of its runs in a row died with their process (a pool process
#: lost, or a worker lost while running it). Any other end of a run deletes it.
DEATHS = f"{PREFIX}:deaths:"
#: Seconds a death count is kept: long enough to see the redeliveries of one message.
DEATHS_TTL = 24 * 3600
#: Deaths in a row after which the fetch dead-letters a job as ``poison_pill`` instead of
#: running it again.
POISON_DEATHS = 3
#: SET of the tags of held messages whose task has started (the worker writes it when a pool
#: process accepts the job): a lost worker's lease recovered for one of them is a death.
RUNNING = f"{PREFIX}:held:running"

# Job records ------------------------------------------------------------------------------
#: HASH per job id: type, queue, status, timestamps (Unix seconds), attempts, last error,
#: result (JSON, capped), payload; expires ASYNQ_RETENTION after the job finished.
JOB = f"{PREFIX}:job:"
#: ZSET job id -> created at: every job, newest first; ``jobs:by:<dim>:<value>`` per status,
#: type and queue. Members whose record expired are dropped when a listing meets them.
JOBS_INDEX = f"{PREFIX}:jobs:index"
JOBS_BY = f"{PREFIX}:jobs:by:"
JOBS_BY_STATUS = f"{JOBS_BY}status:"
JOBS_BY_TYPE = f"{JOBS_BY}type:"
JOBS_BY_QUEUE = f"{JOBS_BY}queue:"
#: Largest result kept in a job record, in bytes of JSON; larger ones are replaced by a note.
JOB_RESULT_MAX = 64 * 1024

# Workers ----------------------------------------------------------------------------------
#: STRING per worker hostname, refreshed by its heartbeat; its TTL says when it counts as gone.
WORKER = f"{PREFIX}:worker:"
WORKER_TTL = 30
#: STRING per worker node name: JSON of its last heartbeat (when, when its leases were last
#: renewed, its visibility timeout), written every ASYNQ_HEALTH_CHECK_INTERVAL; stale after two
#: intervals, gone after three.
HEARTBEAT = f"{PREFIX}:heartbeat:"
#: HASH per queue: how long jobs waited from due (published, or ETA) to start, as counts per
#: histogram bucket (upper bounds in seconds, plus "+Inf") and their "sum" (the count is the
#: buckets' total); written by the script that marks a job active: no extra round trip.
WAIT = f"{PREFIX}:wait:"
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

# Message headers --------------------------------------------------------------------------
#: Unix time of this publish (every publish: first run, retry, requeue): queue age, wait time.
PUBLISHED_AT = "x-published-at"
#: Unix time of the job's first publish, kept across retries: the dead-letter entry shows it.
FIRST_ENQUEUED_AT = "x-first-enqueued-at"
#: Header on a publish that may happen more than once for the same job id and must run the job
#: at most once: the outbox relay's (a relay that dies between publishing and marking a row
#: sent leaves it for another relay, which publishes the same id again). With it, an existing
#: record is not reset, and the worker skips a delivery whose job already ran or is running.
#: Only a first attempt honours it (no retries, no deferral), so retries, deferrals, dead-letter
#: requeues and operator retries, which re-run a job on purpose, never carry its effect.
PUBLISH_ONCE = "x-publish-once"

# Delays ------------------------------------------------------------------------------------
#: ZSET of messages whose ETA (countdown, eta, retry backoff) is further ahead than
#: PARK_AHEAD seconds, scored by due time; member = "<queue list key>\n<kombu envelope JSON>".
#: Released onto their list when due by one atomic script, so no worker holds them meanwhile.
DELAYED = f"{PREFIX}:delayed"
PARK_AHEAD = 2.0
#: Seconds between two release sweeps in each worker; messages start at most this late.
RELEASE_PERIOD = 0.5
#: Most messages one sweep releases; the next sweep continues at once when it was full.
RELEASE_BATCH = 500

# Flow control -----------------------------------------------------------------------------
#: STRING per unique-job key (digest of task + payload, or the caller's key): the id of the
#: job that holds the window; expires with the window (``unique_for`` seconds).
UNIQUE = f"{PREFIX}:unique:"
#: STRING per rate-limited task: its GCRA "theoretical arrival time" (Unix seconds); expires
#: once the bucket is full again.
RATE = f"{PREFIX}:rate:"
#: Message header on a republish that only defers a job (rate limit, too many jobs): the job's
#: record keeps its creation time and attempt count.
DEFERRED = "x-deferred"
#: ZSET per (task, key value) of per-key concurrency: job id -> lease expiry (Unix seconds).
#: A lease lasts the attempt's hard time limit, so a crashed worker's slot frees itself.
SLOTS = f"{PREFIX}:slots:"

# Periodic jobs ------------------------------------------------------------------------------
#: Prefix of celery-redbeat's keys: its schedule ZSET, one HASH per schedule (definition and
#: last run) and the scheduler lock, kept apart from everything else of the app.
BEAT = f"{PREFIX}:beat:"
#: STRING, the scheduler lock (redbeat names it prefix + ":lock"): held by the active beat.
BEAT_LOCK = f"{BEAT}:lock"
#: Seconds the lock outlives its holder's last renewal: a standby takes over within
#: BEAT_LOCK_TTL + BEAT_TICK_MAX (30 s) of the active scheduler's death.
BEAT_LOCK_TTL = 25
#: Longest sleep between two beat ticks, in seconds; every tick renews the lock, so it is also
#: how often a standby tries to take the lock.
BEAT_TICK_MAX = 5.0
#: HASH schedule name -> id of its latest run: a slot is skipped while that job is unfinished.
PERIODIC_LAST = f"{PREFIX}:periodic:last"
#: HASH schedule name -> slots skipped because the previous run had not finished, ever.
PERIODIC_SKIPPED = f"{PREFIX}:periodic:skipped"

#: Longest a publish waits for its replicas (``ASYNQ_PUBLISH_REPLICAS``), in milliseconds; past
#: it the publish returns with a warning (the job is on the master).
REPLICA_WAIT_MS = 1000
