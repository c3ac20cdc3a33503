"""The emulator's thread pool (run stage): chunks of samples run on threads with one intra-op torch
thread each, created once per process (run/emulator.py's ``Emulator``)."""

from __future__ import annotations

import concurrent.futures
import threading

import torch

_pool_lock = threading.Lock()
_pool_executor: concurrent.futures.ThreadPoolExecutor | None = None
_pool_size = 0


def _one_intra_op_thread() -> None:
    """A pool worker's initializer: one intra-op thread for the life of the thread.

    Order matters. torch initialises a thread's OpenMP thread count lazily, at its first
    parallel-capable call, by copying the process-wide count (``at::lazy_init_num_threads``),
    and ``torch.set_num_threads`` does not count as that first call. Set first and initialised
    later, a worker took the caller's count back, ran OpenMP teams of its own, and with more
    OpenMP threads alive than cores, libgomp stops spinning and parks threads on futexes: the
    caller's own torch ops then ran 4-5x slower for the rest of the process (measured: float
    backend 31,000 -> 6,600 samples/s after an emulator run; tests/test_emulator.py checks it).
    """
    torch.get_num_threads()  # the lazy per-thread initialisation, now
    torch.set_num_threads(1)


def worker_pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """A process-wide pool of ``workers`` or more threads for emulator chunks, each with one
    intra-op thread (``_one_intra_op_thread``), kept for the life of the process: changing
    torch's thread count costs the caller's next parallel op several milliseconds (libgomp
    rebuilds its team), so it is done once per worker, not per run. ``set_num_threads`` also
    sets torch's process-wide count, so the caller's is put back once all workers have started;
    the workers' own (per-thread OpenMP and MKL) count stays 1."""
    global _pool_executor, _pool_size
    with _pool_lock:
        if _pool_executor is None or _pool_size < workers:
            if _pool_executor is not None:
                _pool_executor.shutdown(wait=False)
            threads = torch.get_num_threads()
            started = threading.Barrier(workers)
            _pool_executor = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="snn-deploy-emulator",
                initializer=_one_intra_op_thread)
            list(_pool_executor.map(lambda _: started.wait(), range(workers)))
            torch.set_num_threads(threads)
            _pool_size = workers
        return _pool_executor
