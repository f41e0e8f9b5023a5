"""`one_thread`: a test (or a folder, through an autouse fixture of its conftest) runs on one torch thread.

The machine's 2 cores are shared with other jobs; the small tensor tests gain nothing from a second thread.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
