"""Weight sync payloads: a delta sync leaves a receiver bit-identical to a full sync; the gloo
collective delivers the same updates as the object store (two ranks as threads of this process)."""

import threading

import numpy as np
import pytest
import torch

from distrl.models.flat import FlatWeights
from distrl.roles.learner import free_port
from distrl.roles.weight_sync import (
    DeltaEncoder,
    ShadowWeights,
    StaleDeltaError,
    SyncGroup,
    WeightUpdate,
    receive_update,
    send_update,
)


def weights(seed: int, base: dict[str, torch.Tensor] | None = None, lr: float = 1e-6) -> dict[str, torch.Tensor]:
    """float32 tensors; with ``base``, base + an Adam-sized step of ``lr`` per weight."""
    gen = torch.Generator().manual_seed(seed)
    if base is None:
        return {"a": torch.randn(64, 33, generator=gen) * 0.02, "b": torch.randn(7, generator=gen), "c": torch.zeros(5)}
    return {k: v + lr * torch.randn(v.shape, generator=gen).sign() for k, v in base.items()}


def bf16(tensors: dict[str, torch.Tensor]) -> FlatWeights:
    return FlatWeights.from_tensors(tensors, torch.bfloat16)


def test_delta_updates_leave_the_receiver_bit_identical_to_full_ones():
    encoder, shadow = DeltaEncoder(delta=True), ShadowWeights()
    steps = [weights(0)]
    for step in range(1, 5):
        steps.append(weights(step, steps[-1], lr=1e-6 if step % 2 else 3e-3))
    kinds = []
    for tensors in steps:
        sent = bf16(tensors)
        update = encoder.encode(sent)
        kinds.append("full" if update.full is not None else "delta")
        held = shadow.apply(update)
        assert held.buffer.tobytes() == sent.buffer.tobytes()
    assert kinds[0] == "full" and "delta" in kinds
    assert kinds[1::2] == ["delta", "delta"]  # lr 1e-6: few bf16 words change


def test_a_small_step_sends_a_small_fraction_of_the_buffer():
    encoder = DeltaEncoder(delta=True)
    first = weights(0)
    encoder.encode(bf16(first))
    update, full = encoder.encode(bf16(weights(1, first))), bf16(first)
    assert update.full is None and len(update.indices) < 0.1 * full.nbytes / 2  # < 10% of the bf16 words
    assert update.nbytes < 0.5 * full.nbytes  # 6 bytes per changed word against 2 per word


def test_without_delta_or_when_forced_every_update_is_full():
    plain, forced = DeltaEncoder(delta=False), DeltaEncoder(delta=True)
    first = bf16(weights(0))
    assert plain.encode(first).full is not None and plain.encode(first).full is not None
    forced.encode(first)
    assert forced.encode(first, full=True).full is not None


def test_a_delta_for_other_weights_is_refused():
    encoder, shadow = DeltaEncoder(delta=True), ShadowWeights()
    first = weights(0)
    shadow.apply(encoder.encode(bf16(first)))
    shadow.forget()  # e.g. the engines took the reference's weights
    with pytest.raises(StaleDeltaError, match="holds no weights from the learner"):
        shadow.apply(encoder.encode(bf16(weights(1, first))))


def test_a_read_only_full_buffer_is_copied_before_deltas_write_into_it():
    encoder, shadow = DeltaEncoder(delta=True), ShadowWeights()
    first = bf16(weights(0))
    first.buffer.flags.writeable = False  # as Ray's object store hands it out
    shadow.apply(encoder.encode(first))
    second = bf16(weights(1, weights(0), lr=1e-2))
    assert shadow.apply(encoder.encode(second)).buffer.tobytes() == second.buffer.tobytes()


def test_gloo_collective_delivers_full_and_delta_updates_to_every_receiver():
    group = SyncGroup("127.0.0.1", free_port(), world_size=3, backend="gloo", timeout_s=60)
    steps = [weights(0)]
    steps.append(weights(1, steps[0]))
    flats = [bf16(t) for t in steps]
    layout = flats[0].layout
    received: dict[int, list[WeightUpdate]] = {1: [], 2: []}
    errors = []

    def receiver(rank: int) -> None:
        try:
            pg, shadow = group.join(rank), ShadowWeights()
            for _ in flats:
                update = receive_update(pg, layout, bucket_bytes=1000)
                received[rank].append(update)
                shadow.apply(update)
            received[rank].append(shadow.current)
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=receiver, args=(r,)) for r in (1, 2)]
    for t in threads:
        t.start()
    pg, encoder = group.join(0), DeltaEncoder(delta=True)
    sent = [encoder.encode(f) for f in flats]
    for update in sent:
        send_update(pg, update, bucket_bytes=1000)  # several buckets per payload
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    for rank in (1, 2):
        first, second, final = received[rank]
        assert first.full is not None and second.full is None and second.base == first.serial
        assert np.array_equal(second.indices, sent[1].indices) and np.array_equal(second.values, sent[1].values)
        assert final.buffer.tobytes() == flats[1].buffer.tobytes()
