"""What a job cost: its usage (``worker.usage``) at the prices of a table shipped
with taskfleet (``prices.json``, dated), or at prices the person gives.

Instance time is priced at the stack's instance types: spot or on demand as
the stack runs them, and where a stack allows several types, at the dearest
of them, so the figure is an upper bound. Requests are priced past AWS's
monthly free tier; S3's storage and transfer are not priced (a job's objects
expire with it; fetching outputs out of AWS is the account's own transfer).
Work on local workers costs nothing here; its CPU seconds
are counted instead.
"""

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any, NamedTuple

from scheduler.errors import FleetError
from worker.usage import Usage

MILLION = 1_000_000


def price_table() -> dict[str, Any]:
    """The price table shipped with this release."""
    table: dict[str, Any] = json.loads(
        resources.files("scheduler").joinpath("prices.json").read_text()
    )
    return table


class Prices(NamedTuple):
    """The prices a job's cost is worked out at."""

    instance_hour: float | None  # None: no price known for the stack's instances
    instance_basis: str  # where the instance price comes from, in words
    sqs_per_million: float
    dynamodb_write_per_million: float
    dynamodb_read_per_million: float
    taken: str
    s3_write_per_million: float = 0.0
    s3_read_per_million: float = 0.0  # when the table's prices were taken

    def cost(self, usage: Usage) -> float | None:
        """US dollars, or None when the instance price is unknown and time was used."""
        requests = (
            usage.sqs_requests * self.sqs_per_million
            + usage.dynamodb_writes * self.dynamodb_write_per_million
            + usage.dynamodb_reads * self.dynamodb_read_per_million
            + usage.s3_writes * self.s3_write_per_million
            + usage.s3_reads * self.s3_read_per_million
        ) / MILLION
        if not usage.instance_seconds:
            return requests
        if self.instance_hour is None:
            return None
        return requests + usage.instance_seconds * self.instance_hour / 3600

    def as_dict(self) -> dict[str, object]:
        return {
            "instance_hour_usd": self.instance_hour,
            "instance_basis": self.instance_basis,
            "sqs_per_million_usd": self.sqs_per_million,
            "dynamodb_write_per_million_usd": self.dynamodb_write_per_million,
            "dynamodb_read_per_million_usd": self.dynamodb_read_per_million,
            "s3_write_per_million_usd": self.s3_write_per_million,
            "s3_read_per_million_usd": self.s3_read_per_million,
            "taken": self.taken,
        }


def fleet_prices(
    instance_types: Sequence[str], spot: bool, per_instance_hour: float | None = None
) -> Prices:
    """Prices for a stack of these instance types; ``per_instance_hour`` overrides
    the table's instance price."""
    table = price_table()
    market = "spot" if spot else "on_demand"
    if per_instance_hour is not None:
        if not 0 <= per_instance_hour < 1000:
            raise FleetError(f"price per instance hour {per_instance_hour:g}: give 0 to 1000 USD")
        hour: float | None = per_instance_hour
        basis = "--price-per-instance-hour"
    else:
        known = {name: table["instance_hour"].get(name) for name in instance_types}
        missing = [name for name, price in known.items() if price is None]
        if not instance_types or missing:
            hour = None
            what = ", ".join(missing) or "the stack's instance types (an older stack)"
            basis = f"no price for {what}: give --price-per-instance-hour"
        else:
            dearest = max(instance_types, key=lambda name: known[name][market])
            hour = float(known[dearest][market])
            kind = "spot estimate" if spot else "on demand"
            basis = f"{dearest} {kind}, {table['region']}, {table['taken']}"
            if len(instance_types) > 1:
                basis += f" (the dearest of {', '.join(instance_types)})"
    return Prices(
        hour,
        basis,
        float(table["sqs_per_million"]),
        float(table["dynamodb_write_per_million"]),
        float(table["dynamodb_read_per_million"]),
        str(table["taken"]),
        float(table["s3_write_per_million"]),
        float(table["s3_read_per_million"]),
    )


def cost_fields(usage: Usage, tasks: int, prices: Prices | None) -> dict[str, object]:
    """A job's cost as the API, ``status`` and ``--summary`` show it."""
    cost = None if prices is None else prices.cost(usage)
    return {
        "cost_usd": None if cost is None else round(cost, 8),
        "cost_per_1000_tasks_usd": (
            None if cost is None or not tasks else round(cost * 1000 / tasks, 8)
        ),
        "priced_at": None if prices is None else prices.as_dict(),
    }
