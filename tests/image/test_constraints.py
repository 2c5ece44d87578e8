"""An instance installs pinned versions: image/constraints.txt covers every
package taskfleet needs at run time, and agrees with pyproject's bounds."""

import pytest

from scripts.pin_worker import CONSTRAINTS, pinned, resolve


@pytest.mark.e2e  # pip resolves against the package registry
def test_constraints_pin_everything_an_instance_installs() -> None:
    # pip resolves the project with the constraints, as install.sh does: a pin
    # at odds with pyproject makes it fail, a package without a pin shows here.
    assert resolve("--constraint", str(CONSTRAINTS)) == pinned()
