"""The console tests' running door: one per test module, once its console has a frame to show."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.webconsole import Door, running_door

from tools.wait import wait_for


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    with running_door(tmp_path_factory.mktemp("web")) as d:
        assert wait_for(lambda: d.service.console is not None and d.service.console.slot.latest() is not None, 20)
        yield d
