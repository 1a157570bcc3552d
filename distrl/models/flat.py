"""Weights as one flat byte buffer, the form they take through the object store.

A state dict of many torch tensors pickles tensor by tensor, and every reader copies it out. One
contiguous numpy buffer is written into the object store once and read back zero-copy (Ray maps
numpy buffers from shared memory); each tensor is then a view at its offset. The sender fills the
buffer tensor by tensor (so a sharded model never needs all its gathered tensors at once), and
the receiver loads the views one by one.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

ALIGN = 64
"""Byte alignment of every tensor in the buffer (a cache line; any dtype's element size divides it)."""


@dataclass
class FlatWeights:
    """Tensors ``names[i]`` of ``shapes[i]`` in ``dtype`` at byte ``offsets[i]`` of ``buffer``."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    offsets: list[int]
    dtype: str
    buffer: np.ndarray

    @classmethod
    def allocate(cls, shapes: dict[str, torch.Size], dtype: torch.dtype) -> FlatWeights:
        """An uninitialised buffer laid out for tensors of these names and shapes."""
        item = torch.empty((), dtype=dtype).element_size()
        offsets, size = [], 0
        for shape in shapes.values():
            offsets.append(size)
            size += -(-int(np.prod(shape, dtype=np.int64)) * item // ALIGN) * ALIGN
        return cls(
            names=list(shapes),
            shapes=[tuple(s) for s in shapes.values()],
            offsets=offsets,
            dtype=str(dtype).removeprefix("torch."),
            buffer=np.empty(size, dtype=np.uint8),
        )

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> FlatWeights:
        """Copy (and cast) a state dict into a new flat buffer."""
        flat = cls.allocate({k: v.shape for k, v in tensors.items()}, dtype)
        for i, tensor in enumerate(tensors.values()):
            flat.view(i).copy_(tensor.detach())
        return flat

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes)

    def view(self, i: int) -> torch.Tensor:
        """Tensor ``i`` as a view into the buffer (read-only when the buffer came from the object store)."""
        dtype = getattr(torch, self.dtype)
        count = int(np.prod(self.shapes[i], dtype=np.int64))
        start = self.offsets[i]
        with warnings.catch_warnings():  # object-store buffers are read-only; the views are only read
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            raw = torch.from_numpy(self.buffer[start : start + count * torch.empty((), dtype=dtype).element_size()])
        return raw.view(dtype).view(self.shapes[i])

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, view)`` pairs, lazily: a loader that consumes them one by one copies each once."""
        return ((name, self.view(i)) for i, name in enumerate(self.names))

    def as_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.items())
