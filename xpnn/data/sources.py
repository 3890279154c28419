"""Batch sources for data larger than memory: Keras's PyDataset protocol and generators with steps_per_epoch.

A source hands out host batches `(x, y)` (NumPy arrays, or `x` alone for predict). The training loop asks
`is_batch_source(data)` and then `iter_batches(source, epoch_rng, shuffle, start)` once per epoch.

Exactness and resume. An index-addressable source (`PyDataset`, or any object with `__len__` and
`__getitem__` and Keras's `on_epoch_end`) is read in an order drawn only from the epoch's RNG: the
identity order, or `epoch_rng.permutation(len(source))` with shuffle. So when `source[i]` is a pure function
of `i` (and of what `on_epoch_end` did before, which runs at every epoch end in both cases), a run resumed
from a checkpoint (RNG state, epoch, step) with `start=step` sees the same batches in the same order as a
run never stopped: bit-identical training on the same backend. A generator can only be continued, not
rewound: `GeneratorSource` draws `steps_per_epoch` batches per epoch from one iterator (Keras's
semantics), and a resumed run starts the generator afresh, so it is not exact. Counterpart:
keras.utils.PyDataset; fit(generator, steps_per_epoch=...).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np


class PyDataset:
    """Base class like keras.utils.PyDataset: implement `__len__` (batches per epoch) and `__getitem__(i)`.

    `__getitem__(i)` returns the i-th batch `(x, y)` as arrays (or `x` alone for predict). `on_epoch_end`
    runs after every epoch (e.g. to reshuffle file lists with a seeded RNG).
    """

    def __len__(self) -> int:
        raise NotImplementedError("a PyDataset implements __len__: the number of batches per epoch")

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError("a PyDataset implements __getitem__(index) -> (x, y) batch")

    def on_epoch_end(self) -> None:
        """Called after each epoch."""

    @property
    def num_batches(self) -> int:
        """Batches per epoch: `len(self)` (Keras's `PyDataset.num_batches`)."""
        return len(self)


class GeneratorSource:
    """A generator (or any iterable) of `(x, y)` batches read `steps_per_epoch` batches at a time.

    The same iterator continues across epochs, as Keras's fit(generator, steps_per_epoch=...) does.
    """

    def __init__(self, batches: Iterable[Any], steps_per_epoch: int) -> None:
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, (int, np.integer)):
            raise TypeError(f"steps_per_epoch must be an int; got {steps_per_epoch!r}.")
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1; got {steps_per_epoch}.")
        self.iterator = iter(batches)
        self.steps_per_epoch = int(steps_per_epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch


def is_indexed(obj: Any) -> bool:
    """Whether `obj` is an index-addressable batch source (PyDataset or Keras's PyDataset/Sequence protocol)."""
    if isinstance(obj, PyDataset):
        return True
    if isinstance(obj, (np.ndarray, list, tuple, dict, str, bytes)):
        return False
    return all(hasattr(obj, a) for a in ("__len__", "__getitem__", "on_epoch_end"))


def is_batch_source(obj: Any) -> bool:
    """Whether fit/evaluate/predict should read `obj` batch by batch instead of as one array."""
    return isinstance(obj, GeneratorSource) or is_indexed(obj)


def as_source(data: Any, steps_per_epoch: int | None = None) -> PyDataset | GeneratorSource | Any:
    """`data` as a batch source: generators need `steps_per_epoch`; index-addressable sources pass through."""
    if is_batch_source(data):
        return data
    if isinstance(data, Iterator) or hasattr(data, "__next__"):
        if steps_per_epoch is None:
            raise ValueError("a generator has no length: pass steps_per_epoch (batches per epoch), as in Keras.")
        return GeneratorSource(data, steps_per_epoch)
    raise TypeError(f"{type(data).__name__} is not a batch source (a PyDataset or a generator of (x, y) batches).")


def _check_batch(batch: Any, where: str, need_y: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(batch, tuple) and len(batch) == 2:
        x, y = batch
    elif isinstance(batch, tuple) and len(batch) == 3:
        raise ValueError(f"{where} returned (x, y, sample_weight); xpnn does not take sample weights.")
    elif not need_y and not isinstance(batch, (tuple, list)):
        x, y = batch, None
    else:
        raise ValueError(f"{where} must return an (x, y) tuple of arrays; got {type(batch).__name__}.")
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError(f"{where} returned an empty batch.")
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"{where} returned {len(x)} inputs but {len(y)} labels.")
    return x, y


def batch_order(source: Any, epoch_rng: np.random.Generator, shuffle: bool) -> np.ndarray:
    """The order an index-addressable source is read in this epoch (drawn from `epoch_rng` only)."""
    n = len(source)
    return epoch_rng.permutation(n) if shuffle else np.arange(n)


def iter_batches(
    source: Any,
    epoch_rng: np.random.Generator,
    shuffle: bool = False,
    start: int = 0,
    need_y: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """One epoch of host batches `(x, y)` from `source`, from batch `start` on (a resumed epoch).

    Index-addressable sources are read in `batch_order`; a GeneratorSource yields its next
    `steps_per_epoch` batches (`start` of them are drawn and dropped) and calls nothing at the end.
    The caller calls `source.on_epoch_end()` after the epoch (end_epoch does).
    """
    if isinstance(source, GeneratorSource):
        for step in range(source.steps_per_epoch):
            try:
                batch = next(source.iterator)
            except StopIteration:
                raise ValueError(
                    f"the generator ran out after {step} of {source.steps_per_epoch} steps of this epoch; "
                    "make it loop forever (Keras's convention) or lower steps_per_epoch."
                ) from None
            if step >= start:
                yield _check_batch(batch, f"generator batch {step}", need_y)
        return
    if not is_indexed(source):
        raise TypeError(f"{type(source).__name__} is not a batch source.")
    if len(source) < 1:
        raise ValueError(f"{type(source).__name__} has no batches (len() is {len(source)}).")
    order = batch_order(source, epoch_rng, shuffle)
    for i in order[start:]:
        yield _check_batch(source[int(i)], f"{type(source).__name__}[{int(i)}]", need_y)


def end_epoch(source: Any) -> None:
    """Keras's end-of-epoch hook for index-addressable sources."""
    if is_indexed(source):
        source.on_epoch_end()


def prefetch(batches: Iterator[Any], prepare: Callable[[Any], Any] = lambda b: b, depth: int = 1) -> Iterator[Any]:
    """`prepare(batch)` for each batch, computed `depth` batches ahead in a background thread.

    On CuPy, `prepare` uploads a host batch to the device, so the next batch is read and copied while the
    current one trains. Order is kept; an exception in the thread is raised here, at its batch.
    """
    done = object()
    slots: queue.Queue = queue.Queue(maxsize=max(int(depth), 1))
    stop = threading.Event()

    def work() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                slots.put((prepare(batch), None))
        except BaseException as exc:  # handed to the consumer
            slots.put((None, exc))
            return
        slots.put((done, None))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item, exc = slots.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a worker waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.01)
