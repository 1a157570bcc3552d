"""Weight sync from learner rank 0 to the rollout engines: what one sync sends, and how.

**What.** A :class:`WeightUpdate` is either the whole flat buffer (:class:`~distrl.models.flat.FlatWeights`
in ``rollout.sync_dtype``) or, with ``rollout.sync_delta=true``, only the words that changed since
the previous sync: ``indices`` into the buffer viewed as words of the dtype's size, and their new
``values``. At a real model's learning rate most bf16 weights do not change in a step (Adam moves a
weight by about lr, below half a bf16 ulp for most weights), so a delta is a small fraction of the
buffer. The sender (:class:`DeltaEncoder`) keeps the last buffer it sent; each receiver
(:class:`ShadowWeights`) keeps the last buffer it loaded and applies the delta to it, then loads the
whole buffer into its engine: the engine ends up bit-identical to a full sync. A delta names the
update it applies to (``base``); a receiver holding anything else refuses it.

**How** (``cluster.weight_sync``). ``object_store``: the update is a value the controller passes from
the learner to every engine (on Ray, through the object store). ``collective``: learner rank 0
broadcasts it through a process group of its own (:class:`SyncGroup`: gloo on CPU, NCCL on GPUs) to
every engine worker, bucket by bucket; the group is built from a TCP store outside any default
process group, so FSDP's group and vLLM's tensor-parallel group are untouched. ``ipc``: each
learner rank gathers the whole buffer in its own memory and hands the engine colocated with it a
handle (:class:`SharedWeights`: CUDA IPC on a GPU, a shared-memory file on CPU); the engine reads
the tensors in place, nothing is copied between processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing
from torch.multiprocessing.reductions import reduce_tensor

from distrl.models.flat import FlatLayout, FlatWeights, TensorFlat

#: Bytes per broadcast: large enough to amortise each call, small enough for a staging buffer on a GPU.
BUCKET_BYTES = 256 * 2**20
#: A delta is sent only while it is smaller than this fraction of the full buffer.
MAX_DELTA_FRACTION = 0.5


def _word(dtype: str) -> np.dtype:
    """Unsigned words of the size of ``dtype``'s elements: compared as bit patterns, -0.0 ≠ 0.0."""
    return np.dtype(f"<u{torch.empty((), dtype=getattr(torch, dtype)).element_size()}")


def _index_dtype(words: int) -> np.dtype:
    """Indices of a buffer of ``words`` words: 4 bytes each below 2^32 words (a model under ~4 B
    parameters in bf16), else 8."""
    return np.dtype(np.uint32 if words < 2**32 else np.int64)


def _words(flat: FlatWeights) -> np.ndarray:
    """The buffer as words of its dtype's size."""
    return flat.buffer.view(_word(flat.dtype))


@dataclass
class WeightUpdate:
    """One sync's payload: the whole buffer (``full``), or the changed ``indices``/``values`` words
    of the buffer of update ``base``. ``serial`` numbers the sender's updates."""

    serial: int
    base: int | None = None
    full: FlatWeights | None = None
    indices: np.ndarray | None = None
    values: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes on the wire (the payload, without the few header numbers)."""
        if self.full is not None:
            return self.full.nbytes
        return int(self.indices.nbytes + self.values.nbytes)


@dataclass
class DeltaEncoder:
    """Sender side: turns each sync's full buffer into a :class:`WeightUpdate` (a delta against the
    previous one when ``delta`` and when it is small enough)."""

    delta: bool
    serial: int = 0
    last: FlatWeights | None = field(default=None, repr=False)

    def encode(self, flat: FlatWeights, *, full: bool = False) -> WeightUpdate:
        """The update that brings a receiver holding the previous update to ``flat``; ``full``
        forces the whole buffer (e.g. after the engines held other weights)."""
        self.serial += 1
        previous, self.last = self.last, (flat if self.delta else None)
        if full or previous is None or previous.nbytes != flat.nbytes or previous.dtype != flat.dtype:
            return WeightUpdate(self.serial, full=flat)
        new = _words(flat)
        indices = np.flatnonzero(new != _words(previous)).astype(_index_dtype(len(new)))
        update = WeightUpdate(self.serial, base=self.serial - 1, indices=indices, values=new[indices])
        if update.nbytes > MAX_DELTA_FRACTION * flat.nbytes:
            return WeightUpdate(self.serial, full=flat)
        return update


class StaleDeltaError(RuntimeError):
    """A delta arrived at a receiver that does not hold the update it applies to."""


@dataclass
class ShadowWeights:
    """Receiver side: the last whole buffer loaded, to which deltas apply (kept only when ``keep``:
    without deltas it would only hold memory, on Ray an object-store buffer)."""

    keep: bool = True
    current: FlatWeights | None = field(default=None, repr=False)
    serial: int | None = None

    def apply(self, update: WeightUpdate) -> FlatWeights:
        """The whole buffer after ``update`` (kept for the next delta)."""
        if update.full is not None and not self.keep:
            return update.full
        if update.full is not None:
            buffer = update.full.buffer
            if not buffer.flags.writeable:  # an object-store buffer: the next delta writes into it
                buffer = buffer.copy()
            self.current = FlatWeights(update.full.names, update.full.shapes, update.full.offsets,
                                       update.full.dtype, buffer)  # fmt: skip
        else:
            if self.current is None or self.serial != update.base:
                raise StaleDeltaError(
                    f"weight delta {update.serial} applies to update {update.base}, but this engine holds "
                    f"{self.serial if self.current is not None else 'no weights from the learner'}; the sender "
                    "must send the whole buffer (this is a bug in the sync order)"
                )
            _words(self.current)[update.indices] = update.values
        self.serial = update.serial
        return self.current

    def forget(self) -> None:
        """The engine now holds weights that no update describes (e.g. the reference's)."""
        self.current, self.serial = None, None


@dataclass(frozen=True)
class SyncGroup:
    """A process group for the weight sync, outside every default group: learner rank 0 is rank 0,
    then one rank per engine worker. ``backend``: gloo (CPU) or nccl (GPU)."""

    address: str
    port: int
    world_size: int
    backend: str
    timeout_s: float = 600.0

    def join(self, rank: int) -> dist.ProcessGroup:
        """Block until all ``world_size`` ranks have joined; rank 0 hosts the rendezvous store."""
        timeout = timedelta(seconds=self.timeout_s)
        store = dist.TCPStore(self.address, self.port, self.world_size, is_master=rank == 0, timeout=timeout)
        if self.backend == "nccl":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout  # a stuck broadcast fails after timeout_s instead of waiting for ever
            return dist.ProcessGroupNCCL(store, rank, self.world_size, options)
        return dist.ProcessGroupGloo(store, rank, self.world_size, timeout)


def _device(pg: dist.ProcessGroup) -> torch.device:
    return torch.device("cuda") if isinstance(pg, getattr(dist, "ProcessGroupNCCL", ())) else torch.device("cpu")


def _broadcast(pg: dist.ProcessGroup, array: np.ndarray, bucket_bytes: int) -> None:
    """Broadcast ``array`` (a contiguous byte buffer; rank 0 sends, the others receive into it) in
    buckets; on NCCL each bucket goes through a device staging buffer."""
    raw = torch.from_numpy(array.view(np.uint8).reshape(-1))
    device = _device(pg)
    options = dist.BroadcastOptions()
    options.rootRank = 0
    for start in range(0, raw.numel(), bucket_bytes):
        chunk = raw[start : start + bucket_bytes]
        staged = chunk.to(device) if device.type != "cpu" else chunk
        pg.broadcast([staged], options).wait()
        if staged is not chunk:
            chunk.copy_(staged.cpu())


def send_update(pg: dist.ProcessGroup, update: WeightUpdate, bucket_bytes: int = BUCKET_BYTES) -> None:
    """Rank 0: broadcast a header (kind, serial, base, word count), then the payload."""
    count = 0 if update.full is not None else len(update.indices)
    header = np.array([update.full is None, update.serial, -1 if update.base is None else update.base, count])
    _broadcast(pg, header.astype(np.int64), bucket_bytes)
    if update.full is not None:
        _broadcast(pg, update.full.buffer, bucket_bytes)
    else:
        _broadcast(pg, np.ascontiguousarray(update.indices), bucket_bytes)
        _broadcast(pg, np.ascontiguousarray(update.values), bucket_bytes)


def receive_update(pg: dist.ProcessGroup, layout: FlatLayout, bucket_bytes: int = BUCKET_BYTES) -> WeightUpdate:
    """Every rank but 0: the update rank 0 sends with :func:`send_update`."""
    header = np.zeros(4, dtype=np.int64)
    _broadcast(pg, header, bucket_bytes)
    is_delta, serial, base, count = (int(v) for v in header)
    if not is_delta:
        full = layout.zeros()
        _broadcast(pg, full.buffer, bucket_bytes)
        return WeightUpdate(serial, full=full)
    indices = np.zeros(count, dtype=_index_dtype(layout.nbytes // _word(layout.dtype).itemsize))
    values = np.zeros(count, dtype=_word(layout.dtype))
    _broadcast(pg, indices, bucket_bytes)
    _broadcast(pg, values, bucket_bytes)
    return WeightUpdate(serial, base=base, indices=indices, values=values)


@dataclass
class SharedWeights:
    """A buffer in another process's memory on this GPU or host, passed by handle: ``rebuild(*args)``
    opens it (torch's multiprocessing reductions)."""

    layout: FlatLayout
    rebuild: Callable[..., torch.Tensor]
    args: tuple[Any, ...]

    @classmethod
    def share(cls, flat: TensorFlat) -> SharedWeights:
        """A handle on ``flat``, which the sender must keep alive until every reader has loaded it."""
        if flat.buffer.device.type == "cpu":  # a file in shared memory any process on this host can open
            torch.multiprocessing.set_sharing_strategy("file_system")
            flat.buffer.share_memory_()
        rebuild, args = reduce_tensor(flat.buffer)
        return cls(flat.layout, rebuild, args)

    def open(self) -> TensorFlat:
        return TensorFlat(self.layout, self.rebuild(*self.args))
