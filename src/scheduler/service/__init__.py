"""The scheduler service: jobs over HTTP, kept in a journal, dispatched to the
local pool and the fleet.

``server`` starts it; ``api`` is its routes, behind ``guard`` (Host, origin,
token, limits) and ``http_protocol``; ``journal`` keeps every job, task and
result in SQLite; ``dispatch`` is the one thread that moves tasks from the
journal to the workers and results back.
"""
