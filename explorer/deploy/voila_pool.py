"""Voilà's preheated kernel pool without culled hand-outs: a kernel manager base class for
``VoilaConfiguration.multi_kernel_manager_class``, and a launcher that uses it.

Why pooled kernels were culled (voila 0.5.x, jupyter_server 2.x)
----------------------------------------------------------------
jupyter_server's culler (``MappingKernelManager.cull_kernels`` -> ``cull_kernel_if_idle``) shuts a kernel down when
``utcnow() - kernel.last_activity > cull_idle_timeout``, it is not busy and it has no websocket connection
(``cull_connected`` false). ``last_activity`` only moves on IOPub messages. A preheated kernel runs the notebook
once when the pool fills and is then silent: its ``last_activity`` is the end of that run.

Voilà's ``VoilaKernelManager.cull_kernel_if_idle`` (``voila/voila_kernel_manager.py``) skips a kernel while its
task is still in ``self._pools``. But ``get_rendered_notebook`` hands a kernel out by ``self._pools[name].pop(0)``:
from that moment the kernel is no longer protected, still has no connection (the visitor's page has yet to arrive
and open its websocket, seconds under load) and its ``last_activity`` is as old as the pool. Once the pool has
waited longer than ``cull_idle_timeout``, the next culler tick (every ``cull_interval``) shuts down the kernel that
was just handed to a visitor: the page arrives, its widgets have no kernel. The longer a pool waits for visitors,
the surer this is, which is exactly when a pool is meant to help. Seen on the dashboard (``cull_idle_timeout`` 20 s,
``cull_interval`` 5 s, a pool of 2, first visitor 60 s after the pool was ready): Voilà's own manager culled the
kernel it had just handed out 7 s later ("Culling 'idle' kernel ... with 0 connections due to 66 seconds of
inactivity"); with this manager the kernel was alive 15 s later and nothing was culled.

The fix
-------
:class:`PoolKernelManager` marks pooled kernels as active at every culler tick (``last_activity = now``: a kernel
held in reserve is not idle), and on the first tick after a kernel has left the pool it stamps it once more, so a
handed-out kernel gets a full ``cull_idle_timeout`` from (at latest) its hand-out before the culler may take it,
as a freshly started kernel does. A pooled kernel that died is taken out of the pool and shut down (a visitor
would otherwise be handed a dead kernel: Voilà's guard also keeps the culler from removing dead pooled kernels),
and the pool refills. Without a pool (no ``_pools``) the class behaves exactly like ``AsyncMappingKernelManager``.

Kernels without IPython history: visitors cannot execute code, and dozens of kernels writing one
``history.sqlite`` at once print "The history saving thread hit an unexpected error ... database is locked" into
visitors' pages; kernels this manager starts get ``--HistoryManager.enabled=False`` (``kernel_history`` to keep it).

Refills that do not starve visitors: Voilà refills the pool (``fill_if_needed``, ``fill_delay`` 1 s) after every
hand-out, so in a burst of visitors the pool's replacement kernels run the notebook beside the visitors' own kernels
and share the same cores. Here a refill's kernel start waits while any kernel outside the pool is starting or busy
(a visitor's page being rendered), at most ``PoolKernelManager.refill_wait_s``; a refill task that a visitor takes
from the pool meanwhile (Voilà hands out pending tasks too) starts at once, since it now serves that visitor.

Using it
--------
Importing ``explorer.deploy.voila_pool`` imports the ``explorer`` package (and torch: about 190 MB and 2 CPU-s in
the *server* process), so the dashboard is launched through this file by path, which imports only jupyter_server::

    cd notebooks && python ../explorer/deploy/voila_pool.py dashboard.ipynb \\
        --VoilaConfiguration.preheat_kernel=True --VoilaConfiguration.default_pool_size=16 ...

(``make dashboard``; ``POOL=`` sets the size, capped so the pool holds at most half the memory available at start:
:func:`pool_size_for_memory`). The launcher adds ``--VoilaConfiguration.multi_kernel_manager_class``
naming this class and runs Voilà's ``main``.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
import weakref

from jupyter_server._tz import utcnow
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.utils import ensure_async
from traitlets import Bool, Float

__all__ = ["PoolKernelManager", "pooled_kernel_ids", "launcher_argv", "pool_size_for_memory", "MODULE_ALIAS",
           "KERNEL_MB"]

MODULE_ALIAS = "explorer_voila_pool"  # the name this file registers itself under when run as a launcher


def pooled_kernel_ids(pools: dict) -> set[str]:
    """Ids of the started kernels waiting in Voilà's pools (``{notebook: [task, ...]}``; a task's result is a dict
    with ``kernel_id``); tasks still starting, failed or cancelled are left out."""
    ids: set[str] = set()
    for pool in pools.values():
        for task in tuple(pool):
            if task.done() and not task.cancelled() and task.exception() is None:
                kernel_id = task.result().get("kernel_id")
                if kernel_id:
                    ids.add(kernel_id)
    return ids


class PoolKernelManager(AsyncMappingKernelManager):
    """``AsyncMappingKernelManager`` whose culler never takes a kernel in Voilà's pool, nor one handed out from it
    within ``cull_idle_timeout`` of its hand-out, and whose pool refills wait for the visitors' kernels
    (see the module's docstring)."""

    refill_wait_s = Float(120.0, config=True,
                          help="Longest time a pool refill waits for the visitors' kernels to be quiet before it "
                               "starts its kernel anyway (0: never wait).")

    kernel_history = Bool(False, config=True,
                          help="Whether kernels keep IPython's input history. Dashboard visitors cannot execute "
                               "code, and many kernels writing one history.sqlite at once print 'database is "
                               "locked' into visitors' pages.")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._last_pooled: set[str] = set()
        self._task_kernel: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # pool task -> its kernel id

    def _pool_map(self) -> dict:
        return getattr(self, "_pools", None) or {}  # Voilà's VoilaKernelManager (this class's subclass) sets it

    def _in_pool(self, task) -> bool:
        return task is not None and any(task in pool for pool in self._pool_map().values())

    def visitors_busy(self) -> bool:
        """Whether a kernel outside the pool (a visitor's, being rendered) is starting or busy."""
        pools = self._pool_map()
        reserved = pooled_kernel_ids(pools) | {self._task_kernel[task] for pool in pools.values()
                                               for task in pool if task in self._task_kernel}
        return any(getattr(kernel, "execution_state", None) in ("starting", "busy")
                   for kernel_id, kernel in list(self._kernels.items()) if kernel_id not in reserved)

    async def wait_for_visitors(self, task, poll_s: float = 0.5) -> float:
        """A pool refill (``task`` still in the pool) waits until no visitor kernel is starting or busy in two polls
        in a row, at most ``refill_wait_s``; it goes at once when no visitor kernel is busy at the first poll, when a
        visitor has taken ``task`` from the pool, or when ``task`` is not a pool task. Seconds waited."""
        start = time.monotonic()
        quiet, seen_busy = 0, False
        while self._in_pool(task) and time.monotonic() - start < self.refill_wait_s:
            if self.visitors_busy():
                quiet, seen_busy = 0, True
            else:
                quiet += 1
                if quiet >= 2 or not seen_busy:
                    break
            await asyncio.sleep(poll_s)
        return time.monotonic() - start

    async def start_kernel(self, *args, **kwargs) -> str:
        """Start a kernel; a pool refill first waits for the visitors (:meth:`wait_for_visitors`). Voilà's pool
        calls this from the task it keeps in the pool, so the current task says whether this start is a refill."""
        task = asyncio.current_task()
        if self._in_pool(task):  # reserve the id first: a refill starting beside this one must not wait for it
            kwargs["kernel_id"] = kwargs.get("kernel_id") or str(uuid.uuid4())
            self._task_kernel[task] = kwargs["kernel_id"]
        if not self.kernel_history:
            kwargs["extra_arguments"] = [*(kwargs.get("extra_arguments") or []), "--HistoryManager.enabled=False"]
        waited = await self.wait_for_visitors(task)
        if waited >= 1.0:
            self.log.info("Pool refill waited %.1f s for the visitors' kernels", waited)
        return await super().start_kernel(*args, **kwargs)

    async def refresh_pool(self) -> dict[str, list[str]]:
        """Stamp pooled and just-handed-out kernels as active now; drop dead pooled kernels. What was done, by id."""
        pools = self._pool_map()
        pooled = pooled_kernel_ids(pools)
        now = utcnow()
        dead: list[str] = []
        for kernel_id in pooled:
            kernel = self._kernels.get(kernel_id)
            if kernel is None:
                continue
            if getattr(kernel, "execution_state", None) == "dead" or not await ensure_async(kernel.is_alive()):
                dead.append(kernel_id)
                continue
            kernel.last_activity = now
        handed_out = [k for k in self._last_pooled - pooled if k in self._kernels]
        for kernel_id in handed_out:
            self._kernels[kernel_id].last_activity = now
        for kernel_id in dead:
            self.log.warning("Dropping dead pooled kernel %s from the pool", kernel_id)
            for name, pool in pools.items():
                for task in tuple(pool):
                    if task.done() and not task.cancelled() and task.exception() is None \
                            and task.result().get("kernel_id") == kernel_id:
                        pool.remove(task)
                        refill = getattr(self, "fill_if_needed", None)
                        if refill is not None:
                            refill(delay=None, notebook_name=name)
            try:
                await ensure_async(self.shutdown_kernel(kernel_id, now=True))
            except Exception as error:  # already gone
                self.log.debug("dead pooled kernel %s: %s", kernel_id, error)
        self._last_pooled = pooled - set(dead)
        return {"pooled": sorted(pooled - set(dead)), "handed_out": sorted(handed_out), "dead": sorted(dead)}

    async def cull_kernels(self) -> None:
        try:
            await self.refresh_pool()
        except Exception as error:  # never stop the culler itself
            self.log.exception("refreshing the kernel pool failed: %s", error)
        await super().cull_kernels()


KERNEL_MB = 350  # one dashboard kernel after its first tab: 315-335 MB measured (DESIGN.md, the load command)
POOL_FLAG = "--VoilaConfiguration.default_pool_size="
POOL_MEMORY_SHARE = 0.5  # the pool may hold at most half the memory available when the server starts


def pool_size_for_memory(requested: int, available_bytes: int, kernel_mb: float = KERNEL_MB) -> int:
    """The pool size to use: ``requested``, but no more kernels than :data:`POOL_MEMORY_SHARE` of
    ``available_bytes`` holds at ``kernel_mb`` each (a pool too big for the machine would leave no memory to the
    visitors it is meant to serve)."""
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ValueError(f"requested must be an int >= 0, got {requested!r}")
    if isinstance(available_bytes, bool) or not isinstance(available_bytes, int) or available_bytes < 0:
        raise ValueError(f"available_bytes must be an int >= 0, got {available_bytes!r}")
    return min(requested, int(POOL_MEMORY_SHARE * available_bytes // (kernel_mb * 2 ** 20)))


def launcher_argv(argv: list[str], available_bytes: int | None = None) -> list[str]:
    """``argv`` plus the flag naming :class:`PoolKernelManager` (unless ``argv`` names a kernel manager class), with
    the pool size (``--VoilaConfiguration.default_pool_size=N``) capped by :func:`pool_size_for_memory`
    (``available_bytes``: the memory available now, by default psutil's reading); a capped size is said on stderr."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith(POOL_FLAG):
            value = arg[len(POOL_FLAG):]
            if not value.isdigit():
                raise ValueError(f"{POOL_FLAG[2:-1]} must be an int >= 0, got {value!r}")
            if available_bytes is None:
                import psutil

                available_bytes = psutil.virtual_memory().available
            size = pool_size_for_memory(int(value), available_bytes)
            if size < int(value):
                print(f"voila_pool: a pool of {value} kernels would hold about {int(value) * KERNEL_MB / 1024:.1f} "
                      f"GB of the {available_bytes / 2 ** 30:.1f} GB available; preheating {size} instead "
                      f"(POOL= sets the size)", file=sys.stderr)
                argv[i] = f"{POOL_FLAG}{size}"
    if any(arg.startswith("--VoilaConfiguration.multi_kernel_manager_class") for arg in argv):
        return argv
    return [*argv, f"--VoilaConfiguration.multi_kernel_manager_class={MODULE_ALIAS}.PoolKernelManager"]


if __name__ == "__main__":
    # run by path: this folder is sys.path[0]; take it out so its modules (spawner, exchange, ...) shadow nothing
    import os

    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    sys.modules[MODULE_ALIAS] = sys.modules["__main__"]
    from voila.app import main

    sys.argv = [sys.argv[0], *launcher_argv(sys.argv[1:])]
    sys.exit(main())
