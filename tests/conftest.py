"""Session-wide test set-up.

Triton decides between compiling for a GPU and interpreting on CPU when it is first imported (``triton.jit`` reads
``TRITON_INTERPRET`` then, for its own helpers too), and torch may import it on its own (``torch._dynamo``). So on
machines without CUDA the interpreter is switched on here, before any test module is collected: the kernel tests
(tests/kernels) and the layer's ``backend="triton"`` tests then run the real Triton kernels on CPU tensors.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # outright: an inherited "0" would otherwise leave the kernel tests unrun


import pytest  # noqa: E402


@pytest.fixture()
def one_thread():
    """One torch thread for the test (as the study scripts and the apps run: two spin-waiting threads on 2 shared
    cores are slow), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
