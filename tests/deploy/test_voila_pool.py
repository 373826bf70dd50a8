"""Voilà's preheated pool with a short cull timeout: a kernel handed out after the pool waited longer than
``cull_idle_timeout`` is alive and its page complete with explorer/deploy/voila_pool.py's kernel manager, and is
culled right after its hand-out with Voilà's own (the cause the module documents). A one-cell widget notebook keeps
each server to a few seconds; loopback only, every server stopped."""

import asyncio
import json
import shutil
import time

import pytest

from explorer.bench.dashboard_load import Deadline, kernel_alive, serve, wait_pool_ready
from explorer.bench.dashboard_load.common import NOTEBOOKS
from explorer.bench.dashboard_load.http_visitors import fetch_page
from explorer.deploy.voila_pool import (KERNEL_MB, PoolKernelManager, launcher_argv, pool_size_for_memory,
                                        pooled_kernel_ids)

CULL_TIMEOUT, CULL_INTERVAL = 3, 1
NOTEBOOK = {"cells": [{"cell_type": "code", "execution_count": None, "id": "pool", "metadata": {}, "outputs": [],
                       "source": ["import ipywidgets as W\n", "W.IntSlider(value=3)"]}],
            "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                        "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def test_pooled_ids_skip_pending_failed_and_cancelled_tasks():
    async def scenario():
        loop = asyncio.get_running_loop()
        done, pending, failed, cancelled = (loop.create_future() for _ in range(4))
        done.set_result({"kernel_id": "k1"})
        failed.set_exception(RuntimeError("no kernel"))
        cancelled.cancel()
        ids = pooled_kernel_ids({"a.ipynb": [done, pending, failed, cancelled], "b.ipynb": []})
        pending.cancel()
        with pytest.raises(RuntimeError):
            failed.result()
        return ids

    assert asyncio.run(scenario()) == {"k1"}
    assert pooled_kernel_ids({}) == set()


def test_launcher_names_the_class_once():
    argv = launcher_argv(["dashboard.ipynb", "--port=1"])
    assert argv[-1] == "--VoilaConfiguration.multi_kernel_manager_class=explorer_voila_pool.PoolKernelManager"
    assert launcher_argv(argv) == argv
    assert PoolKernelManager.cull_kernels is not PoolKernelManager.__mro__[1].cull_kernels


def test_pool_is_capped_by_the_memory_available(capsys):
    mb = 2 ** 20
    # half of the available memory, in kernels of KERNEL_MB: 16 GiB available holds 16 kernels in its half (8 GiB)
    assert pool_size_for_memory(16, 16 * 1024 * mb) == min(16, int(8 * 1024 // KERNEL_MB))
    assert pool_size_for_memory(16, 2 * 1024 * mb) == int(1024 // KERNEL_MB)  # 2 GiB: 2 kernels of 350 MB
    assert pool_size_for_memory(4, 2 * KERNEL_MB * mb - 1) == 0
    assert pool_size_for_memory(0, 64 * 1024 * mb) == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="requested"):
            pool_size_for_memory(bad, mb)
    argv = launcher_argv(["dashboard.ipynb", "--VoilaConfiguration.default_pool_size=16"], available_bytes=2048 * mb)
    assert argv[1] == f"--VoilaConfiguration.default_pool_size={int(1024 // KERNEL_MB)}"
    assert "preheating 2 instead" in capsys.readouterr().err
    roomy = launcher_argv(["d.ipynb", "--VoilaConfiguration.default_pool_size=16"], available_bytes=64 * 1024 * mb)
    assert roomy[1] == "--VoilaConfiguration.default_pool_size=16" and capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="default_pool_size"):
        launcher_argv(["d.ipynb", "--VoilaConfiguration.default_pool_size=many"], available_bytes=mb)


def test_refill_waits_for_busy_visitors_but_not_once_taken():
    from types import SimpleNamespace

    async def scenario():
        manager = PoolKernelManager(refill_wait_s=5.0)
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        ready.set_result({"kernel_id": "pooled"})
        refill = loop.create_future()  # stands for the refill's task
        manager._pools = {"dashboard.ipynb": [ready, refill]}
        manager._kernels = {"pooled": SimpleNamespace(execution_state="idle"),
                            "visitor": SimpleNamespace(execution_state="busy")}
        assert manager.visitors_busy()
        manager._kernels["pooled"].execution_state = "busy"  # the pool's own kernels never count
        manager._kernels["visitor"].execution_state = "idle"
        assert not manager.visitors_busy()
        assert await manager.wait_for_visitors(refill, poll_s=0.05) < 0.05  # nobody busy: at once
        manager._kernels["visitor"].execution_state = "busy"
        waiting = asyncio.ensure_future(manager.wait_for_visitors(refill, poll_s=0.05))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # a visitor's kernel is busy: the refill waits
        manager._pools["dashboard.ipynb"].remove(refill)  # a visitor takes the refill: it goes at once
        assert 0.3 <= await asyncio.wait_for(waiting, 1) < 1
        manager._pools["dashboard.ipynb"].append(refill)
        waiting = asyncio.ensure_future(manager.wait_for_visitors(refill, poll_s=0.05))
        await asyncio.sleep(0.2)
        manager._kernels["visitor"].execution_state = "idle"  # the visitors are served: it goes after two quiet polls
        assert await asyncio.wait_for(waiting, 1) < 0.6
        assert await manager.wait_for_visitors(None) == pytest.approx(0, abs=0.01)  # not a pool task
        refill.cancel()

    asyncio.run(scenario())


@pytest.mark.parametrize("fixed", [True, False], ids=["voila_pool", "voila_own_manager"])
def test_handed_out_kernel_survives_only_with_the_fix(tmp_path, fixed):
    (tmp_path / "pool.ipynb").write_text(json.dumps(NOTEBOOK))
    shutil.copy(NOTEBOOKS / "voila.json", tmp_path / "voila.json")
    deadline = Deadline(85)
    with serve(tmp_path, "pool.ipynb", deadline, cull_timeout=CULL_TIMEOUT, cull_interval=CULL_INTERVAL, preheat=1,
               pool_fix=fixed) as server:
        wait_pool_ready(server, 1, deadline, timeout=60)
        time.sleep(CULL_TIMEOUT + 3 * CULL_INTERVAL)  # the pooled kernel is now idle far past the cull timeout
        page = fetch_page(server.url, timeout=30)
        assert page["served"], page["problems"]
        kernel_id = page["kernel_id"]
        assert kernel_id and "Using pre-heated kernel" in server.log_text()
        alive = []
        for _ in range(int(2.5 * CULL_INTERVAL / 0.25)):  # two and a half culler ticks after the hand-out
            alive.append(kernel_alive(server.url, kernel_id))
            time.sleep(0.25)
        culled = f"Culling 'idle' kernel 'python3' ({kernel_id})" in server.log_text()
    if fixed:
        assert all(alive) and not culled, alive
    else:  # the cause, reproduced: Voila's own manager culls the kernel it has just handed to a visitor
        assert alive[-1] is False and culled, alive
