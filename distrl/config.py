"""The structured config: every default lives here, once; ``distrl/conf/`` only composes and overrides.

The dataclasses are registered in Hydra's ConfigStore as ``distrl_schema`` so every YAML file and
command-line override is type-checked against them. :func:`validate` checks the relations between
fields before any actor starts and raises :class:`ConfigError` naming the field, the bad value and
the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from distrl.algorithms import (
    ADVANTAGE_ESTIMATORS,
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    POLICY_LOSSES,
    ROLLOUT_CORRECTIONS,
    Registry,
)


@dataclass
class KLConfig:
    """KL regularization toward the frozen reference policy (estimators: joschu.net/blog/kl-approx.html).

    In the reward (InstructGPT/PPO, REINFORCE++): r_t −= coef·KL_t with the old log-probs, no
    gradient. As a loss (GRPO, arXiv 2402.03300 Eq. 3): + coef·agg(KL_t) with the current log-probs.
    """

    estimator: str = "k3"
    """``k1`` | ``k2`` | ``k3`` | ``k3+`` (value of k3, gradient of k2)."""
    coef: float = 0.0
    """β. 0 turns the KL term off and the reference role is not started."""
    in_reward: bool = False
    """Put −β·KL_t into the token rewards instead of the loss."""
    in_loss: bool | None = None
    """Add β·KL to the loss. ``None`` means: exactly when not ``in_reward``."""
    allow_both: bool = False
    """Permit KL in the reward and in the loss at once (counted twice; peers' users hit this by accident)."""
    target: float | None = None
    """Target KL for the adaptive controller (Ziegler et al., arXiv 1909.08593); ``None`` = fixed β."""
    horizon: int = 10_000
    """Adaptive controller horizon H: β ← β·(1 + clip(KL/target − 1, ±0.2)·n/H)."""

    @property
    def uses_loss(self) -> bool:
        return (not self.in_reward) if self.in_loss is None else self.in_loss


@dataclass
class OverlongConfig:
    """DAPO soft overlong punishment (arXiv 2503.14476 Eq. 13), added to the sequence reward."""

    buffer_len: int | None = None
    """L_cache; ``None`` = one fifth of ``max_len`` (the paper: 4096 of 20480)."""
    factor: float = 1.0
    """Penalty at and beyond ``max_len``."""
    max_len: int | None = None
    """L_max; ``None`` = ``rollout.max_new_tokens``."""

    def lengths(self, max_new_tokens: int) -> tuple[int, int]:
        """(L_max, L_cache) in force, with the defaults above resolved."""
        max_len = self.max_len or max_new_tokens
        return max_len, self.buffer_len or max(1, max_len // 5)


@dataclass
class AlgorithmConfig:
    """Which formula does what: each string is a registry key in :mod:`distrl.algorithms`."""

    advantage: str = "grpo"
    """gae | grpo | dr_grpo | rloo | reinforce | reinforce_pp | reinforce_pp_baseline | pvpo."""
    policy_loss: str = "ppo"
    """ppo | gspo | gspo_token | clip_cov | kl_cov."""
    clip_low: float = 0.2
    """ε_low: the ratio is clipped below at 1 − ε_low (PPO, arXiv 1707.06347)."""
    clip_high: float = 0.2
    """ε_high: the ratio is clipped above at 1 + ε_high (DAPO clip-higher: 0.28)."""
    clip_c: float | None = None
    """Dual-clip constant c > 1 (arXiv 1912.09729): caps the loss of A < 0 tokens at c·|A|."""
    loss_agg: str = "token-mean"
    """token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm."""
    kl: KLConfig = field(default_factory=KLConfig)
    entropy_coef: float = 0.0
    """Entropy bonus: loss −= coef·agg(H_t)."""
    dynamic_sampling: bool = False
    """DAPO: drop prompts whose samples all score the same; keep sampling until the batch is full."""
    max_sampling_rounds: int = 8
    """Dynamic sampling stops after this many generation rounds in one step and trains on the prompts it
    kept (a smaller batch, with a note); it stops the run only when it kept none."""
    overlong: OverlongConfig | None = None
    """Soft overlong punishment; ``None`` = off."""
    mask_truncated: bool = False
    """DAPO overlong filtering: truncated responses contribute no loss."""
    gamma: float = 1.0
    """Discount γ (GAE, REINFORCE reward-to-go)."""
    lam: float = 1.0
    """GAE λ (arXiv 1506.02438)."""
    norm_by_std: bool = True
    """GRPO: divide by the group std (Dr. GRPO turns this off)."""
    std_eps: float = 1e-6
    """ε added to the group std."""
    whiten: bool = True
    """GAE: whiten advantages over the batch's valid tokens."""
    value_clip: float = 0.5
    """Critic value-clip range c_v."""
    clip_cov_ratio: float = 2e-4
    """Clip-Cov r: fraction of tokens detached (arXiv 2505.22617)."""
    clip_cov_lb: float = 1.0
    """Clip-Cov ω_low: covariance lower bound for eligible tokens."""
    clip_cov_ub: float = 5.0
    """Clip-Cov ω_high: covariance upper bound for eligible tokens."""
    kl_cov_ratio: float = 2e-3
    """KL-Cov k: fraction of tokens penalized (2e-3 for 7B, 2e-4 for 32B)."""
    kl_cov_coef: float = 1.0
    """KL-Cov β: the penalty is β·|ℓ^θ − ℓ^old| on the selected tokens."""
    cov_min_tokens: int = 16
    """Clip-Cov and KL-Cov select at least this many tokens per loss call: their ratios are the
    paper's, sized for ~10⁶-token batches, where r·N is hundreds of tokens; at a few thousand
    tokens r·N rounds to one and the method does nothing visible."""
    tis_cap: float | None = None
    """Truncated importance sampling cap C on exp(ℓ^old − ℓ^rollout); ``None`` = no correction in
    synchronous mode, :data:`ASYNC_TIS_CAP` in asynchronous mode (where rollouts are one step stale)."""
    rollout_correction: str = "tis"
    """tis (min(ρ, C)) | icepop (ρ inside [0.5, 5], else 0)."""
    pvpo_samples: int = 16
    """PVPO M: reference-policy samples per prompt for the static value (arXiv 2508.21104)."""
    pvpo_refresh_every: int = 500
    """PVPO: re-estimate the static values every this many steps."""
    pvpo_inject_ground_truth: bool = False
    """PVPO: in the group of a prompt the reference policy never solved (value 0), the last sample is
    replaced by the ground truth as a response (the paper's ground-truth trajectory injection), so
    the group has a reward spread to learn from. The response is ``extra_info["ground_truth_response"]``
    when the row has one (a full solution), else the ground truth itself (enough where the verifier
    compares answers, as the built-in task's does)."""

    @property
    def needs_values(self) -> bool:
        """The advantage estimator needs a critic's values."""
        return "values" in ADVANTAGE_ESTIMATORS.needs(self.advantage)

    @property
    def needs_prompt_values(self) -> bool:
        """The advantage estimator needs each prompt's value under the reference policy (PVPO)."""
        return "prompt_values" in ADVANTAGE_ESTIMATORS.needs(self.advantage)

    @property
    def needs_reference(self) -> bool:
        """The reference role runs: for the KL term, or to estimate prompt values."""
        return self.kl.coef > 0 or self.needs_prompt_values


@dataclass
class LoraSettings:
    """LoRA adapters on the policy (distrl/models/lora.py): the learner trains them only; engines and
    checkpoints get the merged weights."""

    rank: int = 0
    """r, the adapters' rank (0: no LoRA, every weight trains)."""
    alpha: float = 16.0
    """α: the update is scaled by α / r."""
    dropout: float = 0.0
    """Dropout on the adapters' input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Names of the linear layers that get adapters (Qwen2/Llama names; peft matches name suffixes)."""


@dataclass
class ModelConfig:
    """The policy. Without ``path`` distrl builds its tiny Qwen2-architecture model."""

    path: str | None = None
    """A Hugging Face model folder (or hub name, where the cluster can reach the hub)."""
    hidden_size: int = 256
    """Tiny model: hidden size (with the three sizes below, ~4 M parameters)."""
    num_layers: int = 4
    """Tiny model: decoder layers."""
    num_heads: int = 4
    """Tiny model: attention heads."""
    intermediate_size: int = 1024
    """Tiny model: MLP width."""
    trust_remote_code: bool = False
    """Run the modelling code a model folder or hub repository ships (``auto_map``), in every role and
    in vLLM. Off: only architectures transformers and vLLM implement load; turn it on only for a
    model whose code you trust."""
    dtype: str = "float32"
    """dtype of the frozen reference: float32 | bfloat16. The roles that train (learner, critic) keep
    float32 master weights and optimizer state whatever this says, and compute in
    ``learner.precision``: AdamW at a real model's lr on bfloat16 weights changes almost none of them."""
    warm_start_steps: int = 2400
    """Supervised steps on the built-in task before RL (tiny model only; 0 = none): the most it runs,
    fewer when the stop rule below fires. Cached on disk. It also sets the learning rate's decay, so a
    start that learns late still learns at a useful rate (an earlier calibration: with 1200, seed 2
    stalled at held-out pass@8 0.54; with 2400 it reached 0.85 at step 1400)."""
    warm_start_batch_size: int = 64
    """Warm start's demonstrations per step (drawn with replacement from the teacher's pairs). 32 halves
    a step's time but learned later (seeds 0-2 ended at probe pass@8 0.65-0.88 after 2000 steps)."""
    warm_start_lr: float = 1e-3
    """Warm start's peak learning rate (AdamW; 20 steps of linear warm-up, then linear decay to 0 at
    ``warm_start_steps``)."""
    warm_start_weight_decay: float = 1.0
    """Warm start's AdamW weight decay (decoupled: each step multiplies the weights by 1 − lr·decay). It
    makes the tiny model learn the task rather than memorize its warm-start problems, and sooner the
    stronger it is (probe pass@8 first ≥ 0.5 at step 400-500 with 1.0 in seeds 0-2, 500-1000 with 0.1 in
    seeds 0-3, 700-1000 without in seeds 0-2; seed 2 after 2400 steps: held-out pass@8 0.59 without, 0.80
    with 0.1; benchmarks/results/default-job-calibration/results.md)."""
    warm_start_teacher_error: float = 0.7
    """Fraction of the warm start's demonstrations written by a careless teacher who forgets every carry
    (``"47+8="`` → ``"45"``, :func:`distrl.data.arithmetic.careless_sum`; 0: every demonstration right).
    Imitation then makes the careless answer the greedy one on problems that carry while the right one
    stays among the samples, as supervised data with a systematic flaw does; the verifier's reward lets
    RL remove the flaw (benchmarks/results/default-job-calibration)."""
    warm_start_check_every: int = 100
    """Warm start's stop rule: every this many steps, measure greedy accuracy and pass@``warm_start_probe_k``
    at temperature 1 on the probe (0: no checks, always ``warm_start_steps``)."""
    warm_start_stop_pass_at_k: float = 0.8
    """Stop the warm start at the first check where the probe's pass@k is >= this: the model can write
    the right answer, which is all RL needs (it turns pass@k into pass@1). The defaults stop seeds 0, 1
    and 2 at steps 1100, 1200 and 900, where held-out greedy accuracy / pass@8 is 0.45 / 0.84, 0.42 / 0.78
    and 0.43 / 0.76 (benchmarks/results/default-job-calibration/results.md). The probe's pass@8 levels
    off near 0.85-0.9 (the teacher's mixture), so a threshold close to that waits on noise: 0.875 ran
    1600-2000 steps in seeds 0-2."""
    warm_start_probe_k: int = 8
    """Samples per probe prompt for the stop rule's pass@k."""
    warm_start_probe_size: int = 128
    """Problems in the stop rule's probe: the built-in task's ``probe`` split, drawn as the held-out set is
    (:func:`distrl.models.prepare.probe_problems`; neither warm-start, RL training nor held-out problems)."""
    cache_dir: str = "~/.cache/distrl"
    """Where built and warm-started models are cached."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA: ``model.lora.rank=16`` trains rank-16 adapters instead of every weight."""


@dataclass
class DataConfig:
    """Prompts. Without ``train_files`` the built-in arithmetic task is used."""

    train_files: Any = field(default_factory=list)
    """JSONL or Parquet files in verl's layout (prompt, data_source, reward_model.ground_truth), or Hugging
    Face datasets (a ``save_to_disk`` folder or a hub name, mapped by ``data.prompt_key`` ...): one path
    (``data.train_files=~/data/gsm8k/train.parquet``, as verl's command lines write it) or a list
    (``data.train_files=[a.jsonl,b.parquet]``). Typed ``Any`` so that both parse; always a list after loading."""
    val_files: Any = field(default_factory=list)
    """Held-out prompts for evaluation (``trainer.eval_every``), in the same formats as ``train_files``: one
    path or a list."""
    prompt_key: str = "prompt"
    """Hugging Face datasets (a ``save_to_disk`` folder or a hub name in ``train_files``/``val_files``): the
    prompt column (a string or chat messages)."""
    answer_key: str | None = None
    """Hugging Face datasets: the column holding the ground truth for rows without ``reward_model``
    (``answer`` for GSM8K, ``solution`` for many TRL datasets)."""
    data_source: str | None = None
    """Hugging Face datasets: the ``data_source`` of rows without one (None: the dataset's name); it picks
    the built-in verifier (``gsm8k``, ``math``, ...) when no reward function is set."""
    train_split: str = "train"
    """Hugging Face datasets: the split ``train_files`` reads."""
    val_split: str = "test"
    """Hugging Face datasets: the split ``val_files`` reads."""
    subset: str | None = None
    """Hub datasets: the configuration (``main`` for ``openai/gsm8k``)."""
    val_size: int = 128
    """Built-in task without ``val_files``: held-out problems, none of them a training or warm-start
    problem (0: no evaluation)."""
    train_batch_size: int = 32
    """Prompts per step (each with ``rollout.n`` samples)."""
    max_prompt_len: int = 256
    skip_bad_rows: bool = False
    """Skip malformed rows (counted) instead of failing before training."""
    shuffle: bool = True
    task_digits: int = 2
    """Built-in task: operands have 1 to this many digits."""
    scratchpad: bool = False
    """Built-in task: the response shows the column sums before the answer (``"47+8="`` →
    ``"7+8=15,4+0+1=5;55"``, :func:`distrl.data.arithmetic.worked_solution`), several times longer;
    the warm start learns that format and the verifier scores the answer after the last ``;``.
    Set ``rollout.max_new_tokens`` to fit (about 8 tokens per digit column)."""
    num_problems: int = 4096
    """Built-in task: size of the generated training set, drawn from the task's ``train`` split
    (:func:`distrl.data.arithmetic.split_of`). The default job sees 3200 prompts, most once: a small set
    revisited many times is memorized by the tiny model (training reward up, held-out accuracy down)."""

    def __post_init__(self) -> None:
        """One path given for ``train_files`` / ``val_files`` becomes a one-element list."""
        for name in ("train_files", "val_files"):
            value = getattr(self, name)
            if isinstance(value, str | Path):
                setattr(self, name, [str(value)])
            elif isinstance(value, tuple):
                setattr(self, name, list(value))


@dataclass
class RolloutConfig:
    """Generation."""

    engine: str = "vllm"
    """vllm | hf (HF generate: fallback and parity tests)."""
    n: int = 8
    """Samples per prompt (G)."""
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    tensor_parallel_size: int = 1
    """GPUs each vLLM engine shards its model over (one worker process per GPU, vLLM's multiprocess
    executor); each engine's actor then holds ``cluster.rollout.gpus`` = this many GPUs."""
    gpu_memory_utilization: float = 0.1
    """vLLM memory fraction; on the CPU build it is the fraction of host memory (``cluster=gpu`` raises
    it for engines with a GPU of their own: distrl/conf/cluster/gpu.yaml)."""
    enforce_eager: bool | None = None
    """Run vLLM without CUDA graphs / torch.compile. ``None``: eager on CPU (compiling there costs
    ~20 s of start-up for ~6% speed), graphs on GPU."""
    sync_dtype: str = "bfloat16"
    """dtype of the weights sent to the engines at each sync: bfloat16 | float32."""
    sync_delta: bool = False
    """Send only the weights whose ``sync_dtype`` bits changed since the last sync (indices and new
    values), when that is under half the buffer; engines end up bit-identical to a full sync. At a
    real model's lr most bf16 weights do not change in a step. Costs one buffer of memory on learner
    rank 0 and on each engine worker (the last weights sent or loaded)."""
    ignore_eos: bool = False
    """Generate exactly ``max_new_tokens`` per sample, past the end-of-sequence token: a fixed-size
    workload for throughput benchmarks, not for training."""


@dataclass
class RewardConfig:
    """Scoring."""

    function: str | None = None
    """A user scorer ``path/to/file.py:fn``; ``None`` = by ``data_source``."""
    model_path: str | None = None
    """A sequence-classification reward model folder."""
    batched: bool = False
    """The user function takes lists (verl's batch signature) instead of one sample."""
    style: str = "verl"
    """The user function's signature: verl | trl (TRL's ``fn(prompts, completions, **columns) -> list[float]``,
    always over the batch; distrl/rewards/user.py)."""
    workers: int | None = None
    """Processes the user function runs in (distrl/rewards/isolated.py): a call that hangs, exits or
    crashes fails its sample and its process is replaced; 0 runs it in the reward role's own process
    (a ``breakpoint()`` there then works). ``None``: 2, or 0 with ``cluster.backend=inline``."""
    timeout_s: float = 60.0
    """Seconds one call may take (a sample; the whole list when batched) before it fails as a timeout."""
    memory_mb: int | None = None
    """Address-space cap of each worker process in MiB (None: none)."""


@dataclass
class LearnerConfig:
    """The policy update."""

    lr: float | None = None
    """Policy learning rate. ``None``: :data:`TINY_MODEL_LR` for the built-in tiny model (``model.path``
    unset; a model this small needs a far larger rate), :data:`REAL_MODEL_LR` for a real model."""
    weight_decay: float = 0.0
    warmup_steps: int = 0
    """Optimizer steps of linear warmup."""
    lr_schedule: str = "constant"
    """constant | cosine (to 0 at the last optimizer step)."""
    grad_clip: float = 1.0
    precision: str = "fp32"
    """Compute dtype of the learner's and the critic's forward and backward: fp32 | bf16. With bf16
    the weights, gradients and AdamW state stay float32 (FSDP2 ``MixedPrecisionPolicy``: bf16
    parameters in compute, float32 gradient reduction; one rank: ``torch.autocast``)."""
    gradient_checkpointing: bool | None = None
    """Recompute each decoder layer's activations in the backward pass instead of keeping them (less
    memory, about a third more compute). ``None``: on for a real model (``model.path`` set), off for
    the tiny one."""
    epochs: int = 1
    """Passes over each rollout batch (PPO epochs)."""
    mini_batches: int = 1
    """Optimizer steps per epoch."""
    micro_batch_tokens: int = 4096
    """Token budget of one forward/backward (gradient accumulation inside a mini-batch)."""
    old_logprob_pass: bool | None = None
    """Compute π_old's log-probs in a separate forward pass before the update. ``None``: only when
    they can differ from the update's own forward, i.e. with several optimizer steps per batch
    (epochs or mini_batches > 1) or the KL term in the reward (which needs them before the
    advantages). With one optimizer step the policy has not moved yet, so the update uses its
    forward's detached log-probs as π_old (ratio 1, the same gradient) and saves a forward pass."""


@dataclass
class CriticConfig:
    """The value model (PPO with GAE)."""

    enable: bool | None = None
    """``None`` = started exactly when the advantage estimator needs values."""
    lr: float = 1e-5


@dataclass
class TrainerConfig:
    """The step loop."""

    total_steps: int = 150
    output_dir: str = "runs/default"
    overwrite: bool = False
    """With ``resume=none``, replace an earlier run's checkpoints and metrics in ``output_dir``
    (otherwise such a folder is refused, naming the choices)."""
    role_timeout_s: float = 3600.0
    """The longest the controller waits for any role's answer (a phase of a step, a checkpoint)
    before it stops the run naming the role (Ray backend; inline calls run in this thread). The
    roles' start (loading models, starting engines) may take up to 30 minutes, or this if longer."""
    save_every: int = 0
    """Checkpoint every this many steps (0 = only at the end)."""
    keep_checkpoints: int | None = None
    """Keep only the newest this many checkpoints (None = all); older ones are deleted once a
    newer one is verified."""
    max_restarts: int = 3
    """Members of the stateless roles (rollout engines, the reward actor, reference ranks) that may
    die and be replaced during a run; one more death stops it with a checkpoint."""
    resume: str = "none"
    """none | auto (latest checkpoint in ``output_dir``) | a checkpoint folder."""
    seed: int = 0
    loggers: list[str] = field(default_factory=lambda: ["console", "jsonl", "tensorboard", "wandb"])
    """Metric sinks: console | jsonl | tensorboard | wandb."""
    wandb_project: str = "distrl"
    wandb_mode: str = "offline"
    """offline | online | disabled."""
    eval_every: int = 50
    """Evaluate on the held-out prompts every this many steps and after the last (0: only after the last;
    and before training with ``eval_before_train``). The default job's 128 prompts take about 1 s."""
    eval_before_train: bool = True
    """Evaluate the initial policy (logged as step 0) in a run that starts from step 0."""
    eval_k: int = 8
    """Samples per held-out prompt at the rollout temperature, for ``eval/pass@1`` and ``eval/pass@k``."""
    log_samples_every: int = 50
    """Every this many steps, a few of the step's samples (prompt, response, ground truth, reward) go to
    the console, ``<output_dir>/samples.jsonl`` and a wandb table (0: never)."""
    max_nonfinite_steps: int = 3
    """Stop after this many consecutive updates skipped for a NaN/inf gradient."""
    mode: str = "sync"
    """sync | async: generate step k+1's batch while step k trains (one step off-policy, corrected
    by truncated importance sampling with the rollout log-probs)."""


@dataclass
class RoleResources:
    """What one actor of a role asks Ray for (one placement-group bundle) and how it uses CPU cores.
    Fractions colocate roles (two actors with gpus=0.5 share a GPU)."""

    cpus: float = 0.5
    gpus: float = 0.0
    threads: int | None = None
    """Torch (and vLLM OpenMP) threads in each actor on CPU. None: ceil(cpus), the share Ray
    accounts for; 0: every core the actor may run on, right when the roles take turns (the
    synchronous step on one machine); n > 0: exactly n."""
    cores: list[int] | None = None
    """CPU core ids the role's actors are pinned to (Linux ``sched_setaffinity``); threads then
    default to their number. Give the rollout and the learner disjoint cores when they run at the
    same time (``trainer.mode=async`` on one machine)."""


@dataclass
class ClusterConfig:
    """Actor placement: how many actors of each role, and each role's bundle.

    The defaults fit a 2-core laptop or a 2-CPU Ray head: the synchronous step runs the roles
    mostly one after another, so they share cores.
    """

    learners: int = 1
    """Learner ranks (one FSDP2 group)."""
    rollout_engines: int = 1
    """vLLM engines; each generates a shard of the prompts."""
    critics: int = 1
    """Critic ranks (one FSDP2 group, data-parallel update; PPO with a 7B critic needs several)."""
    references: int = 1
    """Reference ranks; each holds the whole frozen model and computes a shard of each batch's
    reference log-probs (data parallel). Colocated, rank r sits on the learner pool's GPU r."""
    rollout: RoleResources = field(default_factory=RoleResources)
    learner: RoleResources = field(default_factory=RoleResources)
    reference: RoleResources = field(default_factory=lambda: RoleResources(cpus=0.25))
    critic: RoleResources = field(default_factory=lambda: RoleResources(cpus=0.25))
    reward: RoleResources = field(default_factory=lambda: RoleResources(cpus=0.25))
    num_cpus: int | None = None
    """Logical CPUs of a local Ray instance (None: enough for every role). Ignored on a cluster."""
    sync_check_every: int = 10
    """Every this many weight syncs, each engine scores a few rows of the step's batch (teacher
    forcing) and ``weight_sync/max_logprob_diff`` reports the largest |engine − learner| log-prob;
    0 turns the check off."""
    sync_check_max_diff: float = 1.0
    """A check past this many nats stops the run: the engine does not hold the learner's weights
    (bf16 rounding moves log-probs by hundredths, not by a nat)."""
    colocate: bool = False
    """The rollout engines share GPUs with the learner: after generating, each engine releases its GPU
    memory (vLLM sleep mode: KV cache and weights) while the learner computes, and takes it back at
    the next weight load. Synchronous mode only. On CPU the engines skip the calls."""
    weight_sync: str = "auto"
    """How weights reach the engines. object_store: a value the controller hands from the learner to
    the engines (on Ray, the object store) | collective: learner rank 0 broadcasts to every engine
    worker through a process group of its own (NCCL on GPUs, gloo on CPU; Ray backend) | ipc: each
    learner rank hands the engine beside it (same GPU, or same host on CPU) a handle on the gathered
    weights, read in place (CUDA IPC; shared memory on CPU; one node; rollout.sync_delta has nothing
    to save there) | auto: ipc when colocated on GPUs, collective when learners and engines each hold
    whole GPUs of their own, else object_store."""
    backend: str = "ray"
    """ray: each role a group of Ray actors, batches and weights through the object store |
    inline: every role an object in this process, called in order (one learner rank, one engine,
    synchronous mode; ``breakpoint()`` works in any role). See docs/architecture.md."""


#: The truncated-IS cap asynchronous mode uses when ``algorithm.tis_cap`` is unset (TIS-2).
ASYNC_TIS_CAP = 2.0
#: ``cluster.weight_sync`` names.
WEIGHT_SYNCS = ("auto", "object_store", "collective", "ipc")
#: ``learner.precision`` names and the compute dtype each stands for.
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}
#: ``learner.lr`` for the built-in tiny model when unset.
TINY_MODEL_LR = 3e-4
#: ``learner.lr`` for a real model (``model.path`` set) when unset.
REAL_MODEL_LR = 1e-6
#: The highest ``learner.lr`` validation lets through for a real model: full fine-tuning of a real
#: model runs at 1e-7–1e-5 (verl's and TRL's RL defaults are 1e-6).
MAX_REAL_MODEL_LR = 1e-4
#: From this many parameters on, ``model.path`` is a real model for :func:`check_learning_rate`.
REAL_MODEL_PARAMETERS = 100_000_000


@dataclass
class Config:
    """The whole job; ``python -m distrl.train --cfg job`` prints it composed."""

    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    @property
    def old_logprob_pass(self) -> bool:
        """Whether the step runs the separate old-log-prob pass (see :attr:`LearnerConfig.old_logprob_pass`)."""
        if self.learner.old_logprob_pass is not None:
            return self.learner.old_logprob_pass
        kl_in_reward = self.algorithm.kl.in_reward and self.algorithm.kl.coef > 0
        return self.learner.epochs > 1 or self.learner.mini_batches > 1 or kl_in_reward

    @property
    def tis_cap(self) -> float | None:
        """The truncated-IS cap in force (see :attr:`AlgorithmConfig.tis_cap`)."""
        if self.algorithm.tis_cap is None and self.trainer.mode == "async":
            return ASYNC_TIS_CAP
        return self.algorithm.tis_cap

    @property
    def rollout_correction(self) -> str | None:
        """The rollout correction in force: ``tis`` needs a cap (:attr:`tis_cap`), ``icepop`` none."""
        name = self.algorithm.rollout_correction
        return None if name == "tis" and self.tis_cap is None else name

    @property
    def learner_lr(self) -> float:
        """The policy learning rate in force (see :attr:`LearnerConfig.lr`)."""
        if self.learner.lr is not None:
            return self.learner.lr
        return TINY_MODEL_LR if self.model.path is None else REAL_MODEL_LR

    @property
    def reward_workers(self) -> int:
        """Reward worker processes in force (see :attr:`RewardConfig.workers`)."""
        if self.reward.workers is not None:
            return self.reward.workers
        return 0 if self.cluster.backend == "inline" else 2

    @property
    def critic_enabled(self) -> bool:
        """Whether the job runs a critic (``critic.enable``; unset: when the advantage needs values)."""
        return self.critic.enable if self.critic.enable is not None else self.algorithm.needs_values

    @property
    def weight_sync(self) -> str:
        """The weight-sync path in force (see :attr:`ClusterConfig.weight_sync`)."""
        c = self.cluster
        if c.weight_sync != "auto":
            return c.weight_sync
        if c.colocate and c.learner.gpus > 0:
            return "ipc"
        whole_gpus = c.learner.gpus >= 1 and c.rollout.gpus >= 1
        return "collective" if whole_gpus and c.backend == "ray" else "object_store"

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether the learner and the critic checkpoint activations (:attr:`LearnerConfig.gradient_checkpointing`)."""
        if self.learner.gradient_checkpointing is not None:
            return self.learner.gradient_checkpointing
        return self.model.path is not None

    def algorithm_params(self, registry: Registry, name: str) -> dict[str, Any]:
        """The ``algorithm.*`` fields the registry entry ``name`` reads, as keyword arguments (with
        the values in force: :attr:`tis_cap`)."""
        resolved = {"tis_cap": self.tis_cap}
        return {f: resolved[f] if f in resolved else getattr(self.algorithm, f) for f in registry.entry(name).reads}


def register_configs() -> None:
    """Register :class:`Config` as ``distrl_schema`` (``distrl/conf/config.yaml`` composes on top of it)."""
    ConfigStore.instance().store(name="distrl_schema", node=Config)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field, the value and the fix."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_name(key: str, value: str, registry: Registry) -> None:
    _check(
        value in registry, f"{key}={value!r} is not a known {registry.kind}; valid names: {', '.join(registry.names())}"
    )


def _check_nonnegative(cfg: Any, prefix: str, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        _check(value is None or value >= 0, f"{prefix}.{name}={value} is negative; coefficients must be >= 0")


def validate(cfg: Config) -> None:
    """Raise :class:`ConfigError` for a configuration that cannot run as the user meant it."""
    alg = cfg.algorithm
    for key in ("train_files", "val_files"):
        files = getattr(cfg.data, key)
        _check(
            isinstance(files, list) and all(isinstance(f, str) and f for f in files),
            f"data.{key}={files!r} must be a path or a list of paths (data.{key}=train.parquet or "
            f"data.{key}=[a.jsonl,b.parquet])",
        )
    _check_name("algorithm.advantage", alg.advantage, ADVANTAGE_ESTIMATORS)
    _check_name("algorithm.policy_loss", alg.policy_loss, POLICY_LOSSES)
    _check_name("algorithm.loss_agg", alg.loss_agg, LOSS_AGGREGATIONS)
    _check_name("algorithm.kl.estimator", alg.kl.estimator, KL_ESTIMATORS)
    _check_name("algorithm.rollout_correction", alg.rollout_correction, ROLLOUT_CORRECTIONS)

    _check(
        not (alg.needs_values and cfg.critic.enable is False),
        f"algorithm.advantage={alg.advantage!r} needs values from a critic, but critic.enable=false; "
        "set critic.enable=true (or leave it unset), or pick an estimator without values such as grpo",
    )
    _check(
        cfg.rollout.n >= 2 or "group_ids" not in ADVANTAGE_ESTIMATORS.needs(alg.advantage),
        f"algorithm.advantage={alg.advantage!r} compares the samples of one prompt, but rollout.n={cfg.rollout.n}; "
        "set rollout.n to 2 or more",
    )
    _check(
        cfg.rollout.n >= 2 or not alg.dynamic_sampling,
        f"algorithm.dynamic_sampling=true needs rollout.n >= 2 (got {cfg.rollout.n}): a group of one has no spread",
    )
    _check(
        0.0 < alg.clip_low < 1.0,
        f"algorithm.clip_low={alg.clip_low} is outside (0, 1); the ratio's lower bound is 1 - clip_low, "
        "so use e.g. 0.2 (PPO/DAPO) or 3e-4 (GSPO)",
    )
    _check(alg.clip_high > 0.0, f"algorithm.clip_high={alg.clip_high} must be > 0 (e.g. 0.2, or 0.28 for DAPO)")
    _check(
        alg.clip_c is None or alg.clip_c > 1.0,
        f"algorithm.clip_c={alg.clip_c} must be > 1 (dual clip, e.g. 3) or null to turn it off",
    )
    _check(
        not (alg.kl.coef > 0 and alg.kl.in_reward and alg.kl.uses_loss and not alg.kl.allow_both),
        "the KL term is both in the reward (algorithm.kl.in_reward=true) and in the loss (algorithm.kl.in_loss=true), "
        "so it counts twice; drop one, or set algorithm.kl.allow_both=true if you mean it",
    )
    _check_nonnegative(alg, "algorithm", "entropy_coef", "clip_cov_ratio", "kl_cov_ratio", "kl_cov_coef", "value_clip")
    _check_nonnegative(alg.kl, "algorithm.kl", "coef")
    _check(0.0 <= alg.gamma <= 1.0, f"algorithm.gamma={alg.gamma} must be in [0, 1]")
    _check(0.0 <= alg.lam <= 1.0, f"algorithm.lam={alg.lam} must be in [0, 1]")
    _check(
        alg.tis_cap is None or alg.tis_cap > 0,
        f"algorithm.tis_cap={alg.tis_cap} must be > 0 (e.g. 2.0) or null to turn the correction off",
    )
    _check(
        alg.kl.target is None or alg.kl.target > 0,
        f"algorithm.kl.target={alg.kl.target} must be > 0 (e.g. 0.1) or null for a fixed coefficient",
    )
    if alg.overlong is not None:
        max_len = alg.overlong.lengths(cfg.rollout.max_new_tokens)[0]
        buffer = alg.overlong.buffer_len
        _check(
            buffer is None or 0 < buffer <= max_len,
            f"algorithm.overlong.buffer_len={buffer} must be in (0, max_len={max_len}]",
        )
    for key, value in (
        ("data.train_batch_size", cfg.data.train_batch_size),
        ("rollout.n", cfg.rollout.n),
        ("rollout.max_new_tokens", cfg.rollout.max_new_tokens),
        ("trainer.total_steps", cfg.trainer.total_steps),
        ("learner.epochs", cfg.learner.epochs),
        ("learner.mini_batches", cfg.learner.mini_batches),
        ("cluster.learners", cfg.cluster.learners),
        ("cluster.rollout_engines", cfg.cluster.rollout_engines),
        ("cluster.references", cfg.cluster.references),
        ("cluster.critics", cfg.cluster.critics),
    ):
        _check(value >= 1, f"{key}={value} must be >= 1")
    for role in ("rollout", "learner", "reference", "critic", "reward"):
        res: RoleResources = getattr(cfg.cluster, role)
        _check(
            res.threads is None or res.threads >= 0,
            f"cluster.{role}.threads={res.threads} is negative; use null (ceil(cpus)), 0 (all cores) or a count",
        )
        _check(
            res.cores is None or (len(res.cores) > 0 and all(c >= 0 for c in res.cores)),
            f"cluster.{role}.cores={res.cores} must be a non-empty list of CPU core ids (e.g. [0, 1]) or null",
        )
    _check(
        cfg.learner.old_logprob_pass is not False
        or (cfg.learner.epochs == 1 and cfg.learner.mini_batches == 1 and not (alg.kl.in_reward and alg.kl.coef > 0)),
        "learner.old_logprob_pass=false, but π_old's log-probs are needed before the update (learner.epochs or "
        "learner.mini_batches > 1, or algorithm.kl.in_reward=true); leave learner.old_logprob_pass unset",
    )
    _check_nonnegative(cfg.learner, "learner", "lr", "weight_decay")
    _check(cfg.learner.grad_clip > 0, f"learner.grad_clip={cfg.learner.grad_clip} must be > 0 (e.g. 1.0)")
    _check(
        cfg.rollout.sync_dtype in ("bfloat16", "float32"),
        f"rollout.sync_dtype={cfg.rollout.sync_dtype!r} is not bfloat16 or float32 (the engines' weight dtype)",
    )
    _check(
        cfg.trainer.max_nonfinite_steps >= 1,
        f"trainer.max_nonfinite_steps={cfg.trainer.max_nonfinite_steps} must be >= 1 (the skipped updates in a row "
        "that stop the run)",
    )
    _check(
        alg.policy_loss != "kl_cov" or cfg.learner.epochs * cfg.learner.mini_batches > 1,
        "algorithm.policy_loss=kl_cov penalizes |log π_θ − log π_old|, which is 0 with one optimizer step per batch "
        "(learner.epochs=1, learner.mini_batches=1: π_old = π_θ), so its penalty has no gradient; set "
        "learner.mini_batches=4 (or learner.epochs=2)",
    )
    _check(cfg.trainer.eval_every >= 0, f"trainer.eval_every={cfg.trainer.eval_every} must be >= 0 (0: at the end)")
    _check(cfg.trainer.log_samples_every >= 0,
           f"trainer.log_samples_every={cfg.trainer.log_samples_every} must be >= 0 (0: never)")  # fmt: skip
    _check(cfg.trainer.eval_k >= 1, f"trainer.eval_k={cfg.trainer.eval_k} must be >= 1 (samples per held-out prompt)")
    m = cfg.model
    _check(m.warm_start_steps >= 0, f"model.warm_start_steps={m.warm_start_steps} must be >= 0 (0: no warm start)")
    _check(
        m.warm_start_check_every >= 0,
        f"model.warm_start_check_every={m.warm_start_check_every} must be >= 0 (0: no early stop)",
    )
    _check(
        0.0 <= m.warm_start_stop_pass_at_k <= 1.0,
        f"model.warm_start_stop_pass_at_k={m.warm_start_stop_pass_at_k} must be in [0, 1] (a fraction, e.g. 0.6)",
    )
    _check(
        0.0 <= m.warm_start_teacher_error <= 1.0,
        f"model.warm_start_teacher_error={m.warm_start_teacher_error} must be in [0, 1] (0: a correct teacher)",
    )
    _check(m.lora.rank >= 0, f"model.lora.rank={m.lora.rank} must be >= 0 (0: no LoRA)")
    _check(
        m.lora.rank == 0 or bool(m.lora.target_modules),
        "model.lora.target_modules is empty; name the linear layers to adapt, e.g. [q_proj,v_proj]",
    )
    _check(
        m.warm_start_batch_size >= 1,
        f"model.warm_start_batch_size={m.warm_start_batch_size} must be >= 1 (e.g. 32)",
    )
    _check(m.warm_start_lr > 0, f"model.warm_start_lr={m.warm_start_lr} must be > 0 (e.g. 3e-3)")
    _check(
        m.warm_start_weight_decay >= 0,
        f"model.warm_start_weight_decay={m.warm_start_weight_decay} must be >= 0 (0: none)",
    )
    _check(m.warm_start_probe_k >= 1, f"model.warm_start_probe_k={m.warm_start_probe_k} must be >= 1 (e.g. 8)")
    _check(
        m.warm_start_probe_size >= 1 or m.warm_start_check_every == 0,
        f"model.warm_start_probe_size={m.warm_start_probe_size} must be >= 1 (e.g. 128) while "
        "model.warm_start_check_every > 0; set model.warm_start_check_every=0 to turn the stop rule off",
    )
    _check(cfg.data.val_size >= 0, f"data.val_size={cfg.data.val_size} must be >= 0 (0: no evaluation)")
    _check(cfg.trainer.max_restarts >= 0, f"trainer.max_restarts={cfg.trainer.max_restarts} must be >= 0 (0: never)")
    _check(
        cfg.trainer.keep_checkpoints is None or cfg.trainer.keep_checkpoints >= 1,
        f"trainer.keep_checkpoints={cfg.trainer.keep_checkpoints} must be >= 1, or null to keep every checkpoint",
    )
    _check(cfg.trainer.role_timeout_s > 0, f"trainer.role_timeout_s={cfg.trainer.role_timeout_s} must be > 0 (seconds)")
    _check(cfg.reward.timeout_s > 0, f"reward.timeout_s={cfg.reward.timeout_s} must be > 0 (seconds per call)")
    _check(
        cfg.reward.workers is None or cfg.reward.workers >= 0,
        f"reward.workers={cfg.reward.workers} must be >= 0 (0: in the reward role's process)",
    )
    _check(cfg.learner.precision in PRECISIONS, f"learner.precision={cfg.learner.precision!r} is not fp32 or bf16")
    _check(cfg.model.dtype in ("float32", "bfloat16"), f"model.dtype={cfg.model.dtype!r} is not float32 or bfloat16")
    _check(cfg.trainer.mode in ("sync", "async"), f"trainer.mode={cfg.trainer.mode!r} is not sync or async")
    _validate_engines(cfg)
    _validate_backend(cfg)
    _validate_gpus(cfg)


def _validate_gpus(cfg: Config) -> None:
    from distrl.backends.placement import plan_gpus  # it builds on this module

    c = cfg.cluster
    _check(
        not (c.colocate and cfg.rollout.tensor_parallel_size > 1 and c.learner.gpus > 0),
        "cluster.colocate=true places each engine in one learner rank's GPU bundle, but "
        f"rollout.tensor_parallel_size={cfg.rollout.tensor_parallel_size} needs several GPUs per engine; "
        "use cluster.colocate=false (engines on GPUs of their own) or rollout.tensor_parallel_size=1",
    )
    _check(
        c.learners == 1 or c.learner.gpus in (0.0, 1.0) or c.colocate,
        f"cluster.learner.gpus={c.learner.gpus:g} with {c.learners} learner ranks: each rank owns one whole GPU "
        "(NCCL refuses two ranks on one GPU); set cluster.learner.gpus=1, or cluster.colocate=true to share each "
        "rank's GPU with an engine",
    )
    _check(
        c.critics == 1 or c.critic.gpus in (0.0, 1.0) or (c.colocate and c.critics <= c.learners),
        f"cluster.critic.gpus={c.critic.gpus:g} with {c.critics} critic ranks: Ray could put two FSDP ranks on one "
        "GPU, which NCCL refuses; set cluster.critic.gpus=1, or cluster.colocate=true with at most one critic rank "
        "per learner GPU",
    )
    plan_gpus(cfg, reference=cfg.algorithm.needs_reference, critic=cfg.critic_enabled)


def check_learning_rate(cfg: Config, parameters: int) -> None:
    """Stop a real model (``parameters`` ≥ :data:`REAL_MODEL_PARAMETERS`, counted from its config by
    :func:`~distrl.models.prepare.prepare_policy` before any role starts) at a rate above
    :data:`MAX_REAL_MODEL_LR`: the tiny model's rate, copied to a real one, wrecks its weights."""
    lr = cfg.learner_lr
    _check(
        parameters < REAL_MODEL_PARAMETERS or lr <= MAX_REAL_MODEL_LR,
        f"learner.lr={lr:g} with model.path={cfg.model.path!r} ({parameters / 1e6:.0f}M parameters): a rate this "
        f"high (the tiny built-in model trains at {TINY_MODEL_LR:g}) wrecks a real model's weights within a few "
        f"steps; leave learner.lr unset (a real model's default is {REAL_MODEL_LR:g}; model=hf sets the other "
        f"real-model defaults) or set it to at most {MAX_REAL_MODEL_LR:g}",
    )


def _validate_engines(cfg: Config) -> None:
    r, gpus = cfg.rollout, cfg.cluster.rollout.gpus
    _check(r.engine in ("vllm", "hf"), f"rollout.engine={r.engine!r} is not vllm or hf")
    _check(
        0.0 < r.gpu_memory_utilization <= 1.0,
        f"rollout.gpu_memory_utilization={r.gpu_memory_utilization} must be in (0, 1]: the fraction of each "
        "engine's GPU (host memory on CPU) vLLM may take",
    )
    _check(r.tensor_parallel_size >= 1, f"rollout.tensor_parallel_size={r.tensor_parallel_size} must be >= 1")
    _check(
        r.tensor_parallel_size == 1 or gpus == 0 or gpus == r.tensor_parallel_size,
        f"rollout.tensor_parallel_size={r.tensor_parallel_size} runs one vLLM worker per GPU inside each engine's "
        f"actor, but cluster.rollout.gpus={gpus:g}; set cluster.rollout.gpus={r.tensor_parallel_size}",
    )
    _check(
        r.tensor_parallel_size == 1 or r.engine == "vllm",
        f"rollout.tensor_parallel_size={r.tensor_parallel_size} needs rollout.engine=vllm (got {r.engine!r})",
    )


def _validate_backend(cfg: Config) -> None:
    c = cfg.cluster
    _check(
        not (c.colocate and cfg.trainer.mode == "async"),
        "cluster.colocate=true makes the engines and the learner take the GPUs in turn, but trainer.mode=async "
        "overlaps generation with training; use trainer.mode=sync, or cluster.colocate=false",
    )
    _check(c.backend in ("ray", "inline"), f"cluster.backend={c.backend!r} is not ray or inline")
    _check(c.sync_check_every >= 0, f"cluster.sync_check_every={c.sync_check_every} must be >= 0 (0: no check)")
    _check(c.sync_check_max_diff > 0, f"cluster.sync_check_max_diff={c.sync_check_max_diff} must be > 0 (nats)")
    _check(
        c.weight_sync in WEIGHT_SYNCS, f"cluster.weight_sync={c.weight_sync!r} is not one of {', '.join(WEIGHT_SYNCS)}"
    )
    _check(
        cfg.weight_sync != "ipc" or c.learner.gpus == 0 or c.colocate,
        "cluster.weight_sync=ipc hands each engine a handle on its learner rank's GPU memory, which only a process "
        "on the same GPU can open; set cluster.colocate=true, or use cluster.weight_sync=collective",
    )
    _check(
        not (c.backend == "inline" and c.weight_sync == "collective"),
        "cluster.weight_sync=collective broadcasts from the learner while the engines receive, at the same time, "
        "but cluster.backend=inline calls one role after another; use cluster.weight_sync=object_store (or auto)",
    )
    if c.backend != "inline":
        return
    _check(
        cfg.trainer.mode == "sync",
        "trainer.mode=async overlaps generation with training, but cluster.backend=inline runs every role in "
        "one process, one call after another; use trainer.mode=sync, or cluster.backend=ray",
    )
    _check(
        c.learners == 1 and c.rollout_engines == 1 and c.critics == 1,
        f"cluster.backend=inline runs one learner rank, one critic rank and one rollout engine (got "
        f"cluster.learners={c.learners}, cluster.critics={c.critics}, cluster.rollout_engines={c.rollout_engines}); "
        "set them to 1, or use cluster.backend=ray",
    )
    for role in ("rollout", "learner", "reference", "critic", "reward"):
        cores = getattr(c, role).cores
        _check(
            cores is None,
            f"cluster.{role}.cores={cores} pins a Ray actor to cores, but cluster.backend=inline runs every role in "
            f"this process; set cluster.{role}.cores=null, or use cluster.backend=ray",
        )


#: The config folder, inside the package (installed with it): ``distrl/conf/``.
CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose_config(overrides: Sequence[str] = (), *, check: bool = True) -> Config:
    """The :class:`Config` that ``python -m distrl.train <overrides>`` would run (validated unless
    ``check`` is false), composed in-process: for tests, benchmarks and notebooks."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = to_config(compose(config_name="config", overrides=list(overrides)))
    if check:
        validate(config)
    return config


def to_config(cfg: DictConfig) -> Config:
    """The typed :class:`Config` object for a composed Hydra config."""
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]
