"""Prices: the shipped table, the stack's instance types, an override."""

import pytest

from scheduler.errors import FleetError
from scheduler.pricing import cost_fields, fleet_prices, price_table
from worker.usage import Usage


def test_the_table_is_dated_and_prices_the_default_instance_types() -> None:
    table = price_table()
    assert table["taken"]
    assert table["region"] == "us-east-1"
    for name in ("t3.small", "t3a.small"):  # the stack's defaults (cdk/app.py)
        prices = table["instance_hour"][name]
        assert 0 < prices["spot"] < prices["on_demand"]


def test_an_hour_of_instance_and_a_million_of_each_request() -> None:
    prices = fleet_prices(["t3.small"], spot=False)
    assert prices.instance_hour == 0.0208
    usage = Usage(instance_seconds=3600, sqs_requests=10**6, dynamodb_writes=10**6)
    assert prices.cost(usage) == pytest.approx(0.0208 + 0.40 + 0.625)
    assert prices.cost(Usage(dynamodb_reads=10**6)) == pytest.approx(0.125)


def test_several_instance_types_are_priced_at_the_dearest() -> None:
    prices = fleet_prices(["t3a.small", "t3.small"], spot=True)
    assert prices.instance_hour == price_table()["instance_hour"]["t3.small"]["spot"]
    assert "spot estimate" in prices.instance_basis
    assert "the dearest of t3a.small, t3.small" in prices.instance_basis


def test_an_unknown_instance_type_leaves_the_cost_unknown_unless_priced() -> None:
    unknown = fleet_prices(["x9.huge"], spot=False)
    assert unknown.instance_hour is None
    assert "x9.huge" in unknown.instance_basis
    assert unknown.cost(Usage(instance_seconds=1)) is None
    assert unknown.cost(Usage(sqs_requests=10**6)) == pytest.approx(0.40)  # no time: known
    given = fleet_prices(["x9.huge"], spot=False, per_instance_hour=3.6)
    assert given.cost(Usage(instance_seconds=10)) == pytest.approx(0.01)
    assert given.instance_basis == "--price-per-instance-hour"


def test_a_price_out_of_range_is_refused() -> None:
    with pytest.raises(FleetError, match="give 0 to 1000 USD"):
        fleet_prices(["t3.small"], spot=False, per_instance_hour=-1)


def test_cost_fields_per_1000_tasks() -> None:
    prices = fleet_prices(["t3.small"], spot=False, per_instance_hour=3.6)
    fields = cost_fields(Usage(instance_seconds=100), 4000, prices)
    assert fields["cost_usd"] == pytest.approx(0.1)
    assert fields["cost_per_1000_tasks_usd"] == pytest.approx(0.025)
    assert cost_fields(Usage(), 10, None)["cost_usd"] is None
