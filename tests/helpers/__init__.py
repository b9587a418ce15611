"""What the tests share: one package, so no test imports another test or ``conftest``.

- :mod:`.env`: the suite's settings, the environment of child processes, ``wait_until``;
- :mod:`.processes`: real redis-servers, workers (:class:`~.processes.Worker`) and the job API;
- :mod:`.group_worker`, :mod:`.beat`, :mod:`.outbox`: workers in a process group of their own,
  beat processes, the outbox relay and a TCP proxy for fault tests;
- :mod:`.e2e_tasks`, :mod:`.replay_tasks`, :mod:`.renewer_fault`, :mod:`.e2e_beat`,
  :mod:`.api_app`: the tasks and apps that child processes load;
- :mod:`.dlq`, :mod:`.publish_once`: checks shared by the tests of one feature;
- :mod:`.conformance`, :mod:`.conformance_tasks`, :mod:`.conformance_flower`,
  :mod:`.foreign_producer`: plain Celery's side of the conformance suite;
- :mod:`.browser`: headless Chromium for the console; :mod:`.upgrade_fill`: the upgrade test's
  hands inside an older release.
"""
