"""Scheduling with several runner replicas: WHEN on one leader, the WORK on every replica.

* :mod:`~adconnect.scheduling.cron` - crontab expressions as APScheduler 3.x triggers (day names);
* :mod:`~adconnect.scheduling.plan` - the effective schedules, from plugins and database;
* :mod:`~adconnect.scheduling.store` - schedule overrides and fire records;
* :mod:`~adconnect.scheduling.leader` - the leader lock (a PostgreSQL session advisory lock);
* :mod:`~adconnect.scheduling.scheduler` - the leader's APScheduler: reconcile, catch up, fire;
* :mod:`~adconnect.scheduling.queue` - procrastinate: schema, app, the ``adconnect.sync_stream`` task;
* :mod:`~adconnect.scheduling.worker` - this process's worker and the recovery of dead workers' jobs.

:class:`adconnect.runner.Runner` (``adconnect run``) puts them together.
"""
