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
class FlatLayout:
    """Where each tensor of a flat buffer sits: ``names[i]`` of ``shapes[i]`` in ``dtype`` at byte
    ``offsets[i]``, ``nbytes`` in all (a :class:`FlatWeights` without its bytes)."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    offsets: list[int]
    dtype: str
    nbytes: int

    @classmethod
    def for_shapes(cls, shapes: dict[str, torch.Size], dtype: torch.dtype) -> FlatLayout:
        """Tensors of these names and shapes one after another, each at an :data:`ALIGN`-byte offset."""
        item = torch.empty((), dtype=dtype).element_size()
        offsets, size = [], 0
        for shape in shapes.values():
            offsets.append(size)
            size += -(-int(np.prod(shape, dtype=np.int64)) * item // ALIGN) * ALIGN
        return cls(list(shapes), [tuple(s) for s in shapes.values()], offsets, str(dtype).removeprefix("torch."), size)

    def empty_tensor(self, device: torch.device) -> TensorFlat:
        """An uninitialised buffer of this layout as a torch tensor on ``device``."""
        return TensorFlat(self, torch.empty(self.nbytes, dtype=torch.uint8, device=device))

    def zeros(self) -> FlatWeights:
        """A zero-filled buffer of this layout (the alignment padding stays zero, so two buffers of
        the same weights are byte-equal)."""
        return FlatWeights(self.names, self.shapes, self.offsets, self.dtype, np.zeros(self.nbytes, dtype=np.uint8))


@dataclass
class TensorFlat:
    """A flat buffer held as a torch ``uint8`` tensor (on a GPU, or in host memory) with its layout:
    the same ``items()`` as :class:`FlatWeights`, as views into the tensor."""

    layout: FlatLayout
    buffer: torch.Tensor

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        dtype = getattr(torch, self.layout.dtype)
        size = torch.empty((), dtype=dtype).element_size()
        for name, shape, start in zip(self.layout.names, self.layout.shapes, self.layout.offsets, strict=True):
            count = int(np.prod(shape, dtype=np.int64))
            yield name, self.buffer[start : start + count * size].view(dtype).view(shape)


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
        """A zero-filled buffer laid out for tensors of these names and shapes (:meth:`FlatLayout.for_shapes`)."""
        return FlatLayout.for_shapes(shapes, dtype).zeros()

    @property
    def layout(self) -> FlatLayout:
        return FlatLayout(list(self.names), list(self.shapes), list(self.offsets), self.dtype, self.nbytes)

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
