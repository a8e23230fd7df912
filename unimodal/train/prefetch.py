"""Batches computed ahead by loader worker processes (`TrainConfig.loader_workers`).

A `BatchSource` is a pure function of (step, rank, world, batch size) (docs/architecture.md,
"Data"), so the batches a run will ask for are known in advance: this rank asks for
``(step, micro·world + rank, world·grad_accum, batch_size)`` for every step from the resume
point on, in that order. `Prefetched` hands that list to a `torch.utils.data.DataLoader` with
`workers` processes, which compute the batches ahead, in order, while the model trains. The
batches are the ones the source would return in-process: the data order, exact resume and the
independence from the world size are unchanged (a test checks that the batches are equal).

Anything else asked of the source (progress samples read its banks) is answered by the
in-process source. A request that is not the next one expected (a caller that skips around) is
computed in-process too, so the wrapper can never return a wrong batch.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

Request = tuple[int, int, int, int]  # (step, rank, world_size, batch_size), the arguments of BatchSource.batch


class _Requests(torch.utils.data.Dataset):
    def __init__(self, source: Any, requests: list[Request]) -> None:
        self.source, self.requests = source, requests

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, i: int) -> Any:
        return self.source.batch(*self.requests[i])


class Prefetched:
    """`source` with the batches of `requests` computed ahead by `workers` processes, in order."""

    def __init__(self, source: Any, requests: list[Request], workers: int, ahead: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: Prefetched needs at least one worker (0 means: use the source as is)")
        self.source = source
        self._pending = list(requests)
        self._next = 0
        self.served = 0  # batches that came from the workers
        loader = torch.utils.data.DataLoader(
            _Requests(source, self._pending), batch_size=None, shuffle=False, num_workers=workers,
            prefetch_factor=ahead, collate_fn=_identity, multiprocessing_context="fork" if _fork_ok() else None,
        )
        self._it: Iterator[Any] | None = iter(loader) if requests else None

    def batch(self, step: int, rank: int, world_size: int, batch_size: int) -> Any:
        """The source's batch for these arguments: the prefetched one when it is the next expected."""
        req = (step, rank, world_size, batch_size)
        if self._it is not None and self._next < len(self._pending) and self._pending[self._next] == req:
            self._next += 1
            self.served += 1
            return next(self._it)
        return self.source.batch(*req)

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def __getattr__(self, name: str) -> Any:  # banks, tasks, ...: the in-process source's
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


def _identity(x: Any) -> Any:
    return x


def _fork_ok() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def requests_for(start: int, steps: int, grad_accum: int, world_size: int, rank: int, batch_size: int) -> list[Request]:
    """What this rank's trainer asks its source for, in order, from step `start` to the end of the run."""
    return [(s, m * world_size + rank, world_size * grad_accum, batch_size)
            for s in range(start, steps) for m in range(grad_accum)]
