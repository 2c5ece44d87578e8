"""The fleet path: bundles of tasks to the deployed stack's queues, results back.

``aws`` is the stack's resources and the calls to them; ``link`` runs those
calls on threads of their own; ``bundling`` and ``bundle_sizing`` cut bundles
by work; ``provisioner`` sizes the group from the backlog. Jobs reach the
fleet through the service's journaled dispatch, also for ``run --remote``
(``run``), so the fleet has one dispatcher.
"""
