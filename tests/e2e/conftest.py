"""One local topology per test module (``LocalSystem``, what ``scripts/run`` starts), on a copy
of examples/ in a temporary directory; its teardown checks that nothing is left behind."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from ingress_local.testing import local_system
from ingress_local.topology.system import LocalSystem


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalSystem]:
    async with local_system(tmp_path_factory.mktemp("e2e-local")) as local:
        yield local
