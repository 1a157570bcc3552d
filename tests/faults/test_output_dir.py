"""One job per output_dir, and no silent overwrite of an earlier run."""

import subprocess
import sys

import pytest

from distrl.checkpoint import OutputDirError, claim_output_dir


def test_a_second_job_on_a_live_output_dir_is_refused_until_the_first_ends(tmp_path):
    first = claim_output_dir(tmp_path, resume="none", overwrite=False)
    with pytest.raises(OutputDirError, match=r"another distrl job is writing to trainer\.output_dir"):
        claim_output_dir(tmp_path, resume="auto", overwrite=False)
    first.close()  # the job ended (the OS also drops the lock when a process dies)
    claim_output_dir(tmp_path, resume="auto", overwrite=False).close()


def test_a_lock_held_by_another_process_is_seen_and_released_when_it_dies(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from distrl.checkpoint import claim_output_dir; "
         f"lock = claim_output_dir({str(tmp_path)!r}, resume='none', overwrite=False); print('held', flush=True); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputDirError, match="another distrl job"):
            claim_output_dir(tmp_path, resume="auto", overwrite=False)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    claim_output_dir(tmp_path, resume="auto", overwrite=False).close()


def test_an_earlier_run_is_kept_unless_overwrite_is_asked_for(tmp_path):
    (tmp_path / "checkpoints" / "step_4").mkdir(parents=True)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(OutputDirError, match=r"holds an earlier run \(checkpoints, metrics.jsonl\).*overwrite=true"):
        claim_output_dir(tmp_path, resume="none", overwrite=False)
    assert (tmp_path / "metrics.jsonl").exists()
    claim_output_dir(tmp_path, resume="auto", overwrite=False).close()  # continuing it is fine
    claim_output_dir(tmp_path, resume="none", overwrite=True).close()
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "checkpoints").exists()
