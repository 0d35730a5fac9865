"""DP-SGD fine-tuning of a teacher's generator on its private examples, with Opacus.

`plan_dp_sgd` fixes the mechanism before any private data is touched (noise multiplier sigma,
Poisson rate q, steps, clipping norm C, delta); `DpSgdPlan.epsilon` is what Opacus's RDP
accountant makes of it, and the caller charges that once to the ledger: sampling from the
trained model is post-processing. `dp_finetune` trains exactly the plan. Each step every record
joins the batch with probability q (so a batch may be empty), each record's gradient is clipped
to C, the sum gets N(0, (sigma C)^2) noise and is divided by the expected batch q n. An empty
batch is still a step: its update is pure noise and the accountant counts it.

Opacus's `secure_mode` is not used: it needs torchcsprng, which is not on the package registry,
so noise and sampling come from torch's seeded, not cryptographically secure, generators (the
usual research setting, not a hardened guarantee). The per-step losses are computed on private
data without noise: local diagnostics that must not leave the node.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from torch.utils.data import TensorDataset

from node.llm.host import ModelHost
from node.llm.training import IGNORE, TrainingExample, encode_batch

Progress = Callable[[int, int, float], None]  # (steps done, steps in all, loss of the last step)


@dataclass(frozen=True)
class DpSgdPlan:
    """A DP-SGD run's privacy parameters; its epsilon follows from them alone."""

    noise_multiplier: float  # sigma: noise std as a multiple of max_grad_norm
    sample_rate: float  # q: each record's Poisson probability of joining a step's batch
    steps: int
    max_grad_norm: float  # per-record clipping bound C (the L2 sensitivity of a step's sum)
    delta: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(f"noise_multiplier must be a positive number, not {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate is a probability in (0, 1], not {self.sample_rate}")
        if self.steps < 1:
            raise ValueError(f"a DP-SGD plan needs at least one step, not {self.steps}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a positive number, not {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must lie strictly between 0 and 1, not {self.delta}")

    @property
    def epsilon(self) -> float:
        """Epsilon at `delta` by Opacus's RDP accountant: the Poisson-sampled Gaussian, `steps` times."""
        accountant = RDPAccountant()
        accountant.history = [(self.noise_multiplier, self.sample_rate, self.steps)]
        return float(accountant.get_epsilon(delta=self.delta))

    def as_dict(self) -> dict[str, float]:
        """The plan and its epsilon, as recorded in checkpoint metadata."""
        return {**asdict(self), "epsilon": self.epsilon}


def plan_dp_sgd(
    n_records: int,
    *,
    target_epsilon: float | None = None,
    noise_multiplier: float | None = None,
    delta: float,
    expected_batch: int = 8,
    epochs: float = 1.0,
    max_grad_norm: float = 1.0,
) -> DpSgdPlan:
    """A plan over n_records private records: q = expected_batch / n_records, ceil(epochs / q) steps.

    Give exactly one of `noise_multiplier` (the epsilon follows) or `target_epsilon` (the smallest
    noise found whose epsilon is at or just under the target, within 0.1%).
    """
    if (target_epsilon is None) == (noise_multiplier is None):
        raise ValueError("give exactly one of target_epsilon and noise_multiplier")
    if n_records < 2:
        raise ValueError(f"DP-SGD needs at least 2 private records, not {n_records}")
    if not 1 <= expected_batch <= n_records:
        raise ValueError(f"expected_batch must be between 1 and the {n_records} records, not {expected_batch}")
    if not (math.isfinite(epochs) and epochs > 0):
        raise ValueError(f"epochs must be a positive number, not {epochs}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie strictly between 0 and 1, not {delta}")
    sample_rate = expected_batch / n_records
    # Rounded first so that, e.g., 3 epochs of exactly 12.5 steps are 38 steps and not 39.
    steps = max(1, math.ceil(round(epochs * n_records / expected_batch, 9)))
    if target_epsilon is not None:
        if not (math.isfinite(target_epsilon) and target_epsilon > 0):
            raise ValueError(f"target_epsilon must be a positive number, not {target_epsilon}")
        noise_multiplier = _noise_for(target_epsilon, delta, sample_rate, steps)
    assert noise_multiplier is not None
    return DpSgdPlan(float(noise_multiplier), sample_rate, steps, float(max_grad_norm), delta)


def _noise_for(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise multiplier Opacus's search finds for a target epsilon, to within 0.1% below it."""
    try:
        with warnings.catch_warnings():
            # Known-benign here: the search tries sigmas far too small, whose best RDP order is
            # Opacus's largest; the warning is about those discarded candidates, not the plan.
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha", category=UserWarning)
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant="rdp",
                    epsilon_tolerance=target_epsilon * 1e-3,  # relative: a fixed 0.01 is 10% of epsilon 0.1
                )
            )
    except ValueError as exc:  # Opacus gives up past sigma 1e6 ("The privacy budget is too low.")
        raise ValueError(
            f"no noise multiplier reaches epsilon {target_epsilon} at delta {delta} with q={sample_rate:.4g} "
            f"over {steps} steps: {exc}"
        ) from exc


@dataclass(frozen=True)
class DpSgdResult:
    plan: DpSgdPlan
    losses: list[float]  # per step, on private data (not DP: local only); NaN where the batch was empty
    epsilon: float  # as reported by the PrivacyEngine's own accountant after training


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each example's own mean over its target tokens of weight x next-token cross-entropy, shape [B].

    `weighted_lm_loss` divides by the whole batch's target tokens, so one record's gradient would
    shrink or grow with the other records sampled beside it; adding a record would then move every
    clipped gradient and break the sensitivity bound that clipping is there to give.
    """
    shifted_labels, shifted_weights = labels[:, 1:], weights[:, 1:]
    tokens = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), shifted_labels, ignore_index=IGNORE, reduction="none"
    )
    counted = (shifted_labels != IGNORE).sum(dim=1).clamp(min=1)
    return (tokens * shifted_weights).sum(dim=1) / counted


def dp_finetune(
    host: ModelHost,
    examples: Sequence[TrainingExample],
    plan: DpSgdPlan,
    *,
    lr: float = 1e-3,
    seed: int = 0,
    progress: Progress | None = None,
) -> DpSgdResult:
    """Fine-tune host's model on examples under `plan` (AdamW); exactly `plan.steps` noisy steps.

    Holds the host's lock throughout, so no generation or scoring sees half-trained weights. The
    model comes back unwrapped, without Opacus's hooks, in eval mode.
    """
    if len(examples) < 2:
        raise ValueError(f"DP-SGD needs at least 2 private examples, not {len(examples)}")
    records = list(examples)
    with host._lock, warnings.catch_warnings():
        # Known-benign: secure_mode is unavailable (see the module docstring), and the embedding's
        # inputs are token ids that need no gradient, which torch's full backward hooks remark on.
        warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        module = host.model.train()  # Opacus refuses a module in eval mode
        # One noise generator on the model's device makes runs reproducible by seed without
        # touching the global RNG; a model spread over devices falls back to the global one.
        devices = {p.device for p in module.parameters()}
        noise = torch.Generator(device=devices.pop()).manual_seed(seed) if len(devices) == 1 else None
        # The loader yields record indices, Poisson-sampled at exactly q (empty batches included).
        indices = TensorDataset(torch.arange(len(records)))
        loader = DPDataLoader(indices, sample_rate=plan.sample_rate, generator=torch.Generator().manual_seed(seed))
        engine = PrivacyEngine(accountant="rdp")
        # make_private(poisson_sampling=True) would resample at q = 1 / len(loader) = 1 / ceil(n / B),
        # not B / n: the loader above already samples at the plan's q, so it goes in as is, and the two
        # things make_private derives from 1 / len(loader) are then set from the plan's q.
        private, optimizer, _ = engine.make_private(
            module=module,
            optimizer=torch.optim.AdamW(module.parameters(), lr=lr),
            data_loader=loader,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            poisson_sampling=False,
            noise_generator=noise,
        )
        optimizer.expected_batch_size = plan.sample_rate * len(records)  # the "mean" divisor: q * n
        optimizer.attach_step_hook(engine.accountant.get_optimizer_hook_fn(sample_rate=plan.sample_rate))
        private.forbid_grad_accumulation()  # as make_private does under Poisson sampling
        try:
            losses = _run_steps(host, private, optimizer, loader, records, plan.steps, progress)
        finally:
            # Back to the plain module (the wrapper has no .generate), without hooks, in eval mode.
            host.model = private.to_standard_module().train(False)
            _strip_opacus_leftovers(host.model)
        epsilon = float(engine.get_epsilon(plan.delta))
        host.metadata.train_steps += plan.steps
        host.metadata.extra["dp_sgd"] = plan.as_dict()
    return DpSgdResult(plan=plan, losses=losses, epsilon=epsilon)


def _strip_opacus_leftovers(module: torch.nn.Module) -> None:
    """Drop what `to_standard_module` leaves: parameters' `summed_grad` and gradients, and
    submodules' activation lists (holding tensors if a step failed between forward and backward)."""
    for parameter in module.parameters():
        parameter.grad = None
        if hasattr(parameter, "summed_grad"):
            del parameter.summed_grad
    for submodule in module.modules():
        for name in ("activations", "max_batch_len"):
            if name in vars(submodule):
                delattr(submodule, name)


def _run_steps(
    host: ModelHost,
    private: torch.nn.Module,
    optimizer: DPOptimizer,
    loader: DPDataLoader,
    records: list[TrainingExample],
    steps: int,
    progress: Progress | None,
) -> list[float]:
    """Exactly `steps` DP optimizer steps, looping over the Poisson loader as often as needed."""
    losses: list[float] = []
    while len(losses) < steps:
        for (indices,) in loader:
            optimizer.zero_grad(set_to_none=True)
            if len(indices) == 0:
                # No record sampled: zero per-sample gradients, so the optimizer adds noise alone,
                # divides by q * n and steps, and the accountant counts the step (as it must).
                for parameter in optimizer.params:
                    parameter.grad_sample = parameter.new_zeros((0, *parameter.shape))
                loss = float("nan")
            else:
                chunk = [records[i] for i in indices.tolist()]
                batch = encode_batch(host.tokenizer, chunk, host.max_positions, host.device)
                inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
                logits = private(**inputs, position_ids=batch.position_ids).logits  # contiguous [B, T]
                per_example = per_example_loss(logits, batch.labels, batch.weights)
                # Mean over the batch, as loss_reduction="mean" expects (Opacus rescales per-sample grads).
                per_example.mean().backward()  # type: ignore[no-untyped-call]
                loss = float(per_example.detach().mean())
            optimizer.step()
            losses.append(loss)
            if progress is not None:
                progress(len(losses), steps, loss)
            if len(losses) == steps:
                break
    return losses
