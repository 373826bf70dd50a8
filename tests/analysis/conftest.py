"""Fixtures shared by the analysis tests."""

import pytest
import torch


@pytest.fixture()
def one_thread():
    """One torch thread for the test (as the study scripts and the apps run: two spin-waiting threads on 2 shared
    cores are slow), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
