"""Backups that survive the host: a target's data in a restic repository elsewhere.

| module | what |
|---|---|
| ``repository.py`` | the target's repository (``workers/backup/remote.py``), from its settings |
| ``service.py`` | the gated service as it runs now: its deployment, compose spec, sources |
| ``snapshots.py`` | take a snapshot now (scheduled or asked for), or send a deployment's backup |
| ``ticker.py`` | beat's tick, run on a worker: due snapshots and drills, stale ones told |
| ``restore.py`` | a remote snapshot back onto this host, as a restore with its safety |
| ``drill.py`` | the latest snapshot restored into scratch and started beside the live app |
| ``telling.py`` | the notices: a snapshot failed, the last one is too old, a drill failed |

A snapshot holds the target's lease only while the data is staged (and the service
stopped, for a final pass): the upload runs from the stage, which is rollhook's own, so a
slow or unreachable repository never holds a deployment back.
"""
