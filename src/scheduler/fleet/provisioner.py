"""How many instances the fleet should have, from the exact backlog.

The scheduler knows the backlog the moment work arrives, minutes before the
stack's CloudWatch alarms do; it sets the group's desired capacity at once
and leaves the scaling policies as the backstop. The rule:
none while the queue is empty, one for the first bundle, then up to one per
pending bundle, within the group's minimum and maximum.
"""


def desired_capacity(
    *, backlog: int, in_service: int, busy: int, minimum: int, maximum: int
) -> int:
    """Instances wanted for ``backlog`` bundles waiting and ``busy`` instances working.

    ``in_service`` is what the group has now: with work waiting the fleet never
    shrinks (an idle instance will pick something up), and without work it
    keeps only the busy ones, whose scale-in protection keeps them anyway.
    """
    if minimum < 0 or maximum < minimum:
        raise ValueError(f"bad group limits: minimum {minimum}, maximum {maximum}")
    if min(backlog, in_service, busy) < 0:
        raise ValueError("backlog, in_service and busy cannot be negative")
    wanted = busy if backlog == 0 else max(busy + backlog, in_service)
    return max(minimum, min(maximum, wanted))
