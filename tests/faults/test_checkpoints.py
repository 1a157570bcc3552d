"""Checkpoints you can trust: a checkpoint damaged after it was written, or one a dead job left
half-written, is never resumed from; resume=auto says which step it takes and which it passed
over; trainer.keep_checkpoints prunes; a node writing where the driver cannot see is named."""

import pytest

from distrl import checkpoint
from distrl.checkpoint import CheckpointError
from distrl.trainer import Trainer

INLINE = ["cluster.backend=inline", "rollout=hf", "trainer.save_every=1"]


def test_a_damaged_or_half_written_checkpoint_is_passed_over_and_named(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    first = Trainer(tiny_config(*INLINE, f"trainer.output_dir={out}"))
    try:
        first.fit()
    finally:
        first.shutdown()
    step_1, step_2 = checkpoint.checkpoint_dir(out, 1), checkpoint.checkpoint_dir(out, 2)
    assert checkpoint.verify(step_1) is None and checkpoint.verify(step_2) is None
    weights = step_2 / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as f:  # the disk lost the file's tail
        f.truncate(size // 2)
    leftover = out / "checkpoints" / ".step_3.tmp"  # a job killed while writing step 3
    leftover.mkdir()
    (leftover / "optimizer.pt").write_bytes(b"half")

    with pytest.raises(CheckpointError, match=rf"step_2'? is damaged: model.safetensors has {size // 2} bytes"):
        Trainer(tiny_config(*INLINE, f"trainer.output_dir={out}", f"trainer.resume={step_2}"))

    resumed = Trainer(tiny_config(*INLINE, f"trainer.output_dir={out}", "trainer.resume=auto",
                                  "trainer.total_steps=3", "trainer.keep_checkpoints=2"))  # fmt: skip
    try:
        said = capsys.readouterr().out
        assert f"passes over {step_2}: model.safetensors has {size // 2} bytes, the manifest says {size}" in said
        assert f"resuming from {step_1}" in said
        assert resumed.start_step == 1
        assert not leftover.exists()
        resumed.fit()
    finally:
        resumed.shutdown()
    assert [p.name for p in checkpoint.steps(out)] == ["step_3", "step_2"]  # step_1 pruned
    assert all(checkpoint.verify(p) is None for p in checkpoint.steps(out))


def test_a_changed_byte_fails_the_hash_and_a_file_the_driver_cannot_see_is_named(tmp_path):
    staging = checkpoint.staging_dir(tmp_path, 1)
    (staging / "optimizer.pt").write_bytes(b"\x00" * 64)
    sealed = checkpoint.seal(staging, staging)
    elsewhere = {"model.safetensors": [8, "0" * 64]}  # written on a node whose disk the driver does not see
    with pytest.raises(CheckpointError, match=r"learner rank 0 on node 'node-7' wrote .*model.safetensors.*shares"):
        checkpoint.finish(staging, {"step": 1}, [("learner", "node-7", sealed | elsewhere)])
    final = checkpoint.finish(staging, {"step": 1}, [("learner", "node-7", sealed)])
    assert checkpoint.verify(final) is None
    with (final / "optimizer.pt").open("r+b") as f:
        f.write(b"\x01")
    assert checkpoint.verify(final) == "optimizer.pt differs from what was written (SHA-256)"
    assert checkpoint.verify(final, hashes=False) is None


def test_a_learner_writing_where_the_driver_cannot_see_stops_before_training(tiny_config, tmp_path):
    trainer = Trainer(tiny_config(*INLINE))
    try:
        learner = trainer.learner.members[0]
        learner.probe_output_dir = lambda path: checkpoint.probe(tmp_path / "other_node_disk" / "probe")
        with pytest.raises(CheckpointError, match=r"learner rank 0 on node .* the driver .* does not see it"):
            trainer.check_shared_output_dir()
    finally:
        trainer.shutdown()
