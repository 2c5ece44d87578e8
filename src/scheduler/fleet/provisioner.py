"""How many instances the fleet should have, from the work on the request queue.

The scheduler knows the backlog the moment work arrives, minutes before the
stack's CloudWatch alarms do; it sets the group's desired capacity at once
and leaves the scaling policies as the backstop. Every client of a stack
reads the same queue and group, so every client asks for the same number,
whatever job it submitted: none fight. The rule counts every slot of an
instance: the instances holding work (those protected from scale-in, or as
many as the bundles in flight need, an instance holding up to its slots'
worth of them), and for the bundles waiting, one instance per slots'
worth. Idle instances beyond that are let go: the group ends unprotected
instances first, and a worker holds protection only while it holds work.
"""

import math


def desired_capacity(
    *,
    waiting: int,
    in_flight: int,
    busy: int,
    slots_per_instance: int,
    minimum: int,
    maximum: int,
) -> int:
    """Instances wanted for ``waiting`` bundles on the request queue, ``in_flight``
    bundles held by workers, and ``busy`` instances holding work."""
    if minimum < 0 or maximum < minimum:
        raise ValueError(f"bad group limits: minimum {minimum}, maximum {maximum}")
    if min(waiting, in_flight, busy) < 0 or slots_per_instance < 1:
        raise ValueError("waiting, in_flight and busy cannot be negative, nor slots below 1")
    working = max(busy, math.ceil(in_flight / slots_per_instance))
    wanted = working + math.ceil(waiting / slots_per_instance)
    return max(minimum, min(maximum, wanted))
