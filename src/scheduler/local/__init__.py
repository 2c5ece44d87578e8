"""The local path: worker processes on this machine, fed chunks of tasks.

``run`` is ``taskfleet run`` (scheduler and workers in one process, no
server); ``pool`` and ``dispatch`` keep the workers busy, and the scheduler
service uses them for its local jobs too.
"""
