"""TnD (Ma, Wang, Chai 2024): a student learns language from scratch by trials and demonstrations.

Algorithm 1 of the paper, one learning step at a time (n = 1, 2, ...), as the reference code
(sled-group/TnD, run_TnD.py) does it:

  if n is one of the c = 3 CLM steps of its phase:
      a causal-LM update on the next batch of the child-directed corpus (AdamW at student.lr under
      student.lr_schedule: the reference warms up linearly from 0 to 1e-4 over 8000 steps)
  else (the r = 1 interactive step that closes the phase):
      1. prompts: the first 5 tokens of each text of the batch
      2. trials: the student continues every prompt (top-k 20, top-p 0.95)
      3. demonstrations: a teacher continues the same prompts (`Demonstrate`, over gRPC)
      4. rewards, each minus the baseline A_n = log2 n:
         a trial's is R_phi(trial), the teacher's age predictor (`Score`, SCORE_KIND_AGE);
         a demonstration's is the teacher's age, log2(tnd_teacher_steps): demonstrations are
         always worth more than the student's present age
      5. PPO on trials and demonstrations together (student/ppo.py): one epoch of minibatches,
         each an optimizer step of PPO's own Adam at a constant tnd_ppo_lr (2e-5)
      6. a CLM update (the AdamW of the CLM steps) on trials and demonstrations

Departures the paper's code also offers, as settings: `tnd_reference` takes A_n as R_phi's mean
over a CLM-only reference student's continuations of the same prompts (trained in lockstep on the
same corpus batches; --ref_reward); `tnd_demo_reward: age_predictor` scores demonstrations with
R_phi like trials. Ablations (`student.tnd_mode`) change exactly what enters steps 2-6:
`trial_only` drops the demonstrations (no Demonstrate call), `demo_only` drops the trials, and
`clm_only` makes every step a CLM step (no teacher at all); `double_clm` keeps steps 1-3 and 6 but
not 4-5, the reference's control for the CLM updates an interactive step adds.

At each evaluation the student's surprisal of the task's test words is measured and appended
to `<data_dir>/student/tnd/surprisal.jsonl` with its cumulative trial counts, for
`agora tnd report`. The value head, the reference student and their optimizers live in each
checkpoint (safetensors), so a resumed run goes on from the same state.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from node.llm.host import ModelHost
from node.llm.sampling import SamplingParams
from node.llm.tokenizer import encode
from node.llm.training import clm_example
from node.rpc.agora.v1 import teacher_pb2
from node.tasks.base import Example
from node.tasks.word_learning import WordLearningTask
from student import ppo
from student.checkpoints import load_optimizer, optimizer_tensors
from student.learner import Learner, LearnerContext, StepResult, Tagged
from student.teachers import LessonRequestError

log = logging.getLogger("agora.student")

RUN_DIR = "tnd"  # under <data_dir>/student/
SURPRISAL_FILE = "surprisal.jsonl"
VALUE_HEAD_FILE = "value_head.safetensors"
REFERENCE_FILE = "reference.safetensors"
TRAINING_STATE_FILE = "tnd_optimizers.json"
PPO_OPTIMIZER_FILE = "ppo_optimizer.safetensors"
OWN_CORPUS_SEED = 7919  # the generator seed of the sentences a student owns (tnd_corpus)
END_MARKS = frozenset({".", "!", "?"})  # every sentence of the corpus ends with one
SENTENCE_TOKENS = 16  # the longest template has 13 words (word-level tokens)


@dataclass
class Interaction:
    """What one interactive step did: kept for the log and for tests of the mechanics."""

    step: int
    prompts: list[str]
    trials: list[str] = field(default_factory=list)
    demos: list[str] = field(default_factory=list)
    reference_texts: list[str] = field(default_factory=list)  # the reference student's continuations (for A_n)
    scores: list[float] = field(default_factory=list)  # R_phi of each PPO sample, trials first
    baseline: float = 0.0  # A_n
    rewards: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # "trial" or "demo" per PPO sample
    advantages: torch.Tensor | None = None  # whitened, [B, L-1]
    mask: torch.Tensor | None = None
    losses: ppo.PPOLosses | None = None  # the last minibatch's
    minibatch_losses: list[ppo.PPOLosses] = field(default_factory=list)
    clm_loss: float = math.nan


def completes_a_sentence(task: WordLearningTask, context: str, continuation: str) -> bool:
    """Whether context + continuation, cut after the first end mark past the context, is a
    grammatical sentence of the corpus that starts with the context."""
    words = [*context.split(), *continuation.split()]
    start = len(context.split())
    end = next((i for i, word in enumerate(words) if i >= start and word in END_MARKS), len(words) - 1)
    return task.check_sentence(words[: end + 1], context.split()) is None


class TnDLearner(Learner):
    name = "tnd"

    def __init__(self, ctx: LearnerContext) -> None:
        super().__init__(ctx)
        s = ctx.settings
        if not isinstance(ctx.task, WordLearningTask):
            raise ValueError(f"TnD learns the word_learning corpus; student.task is {s.task!r}")
        self.task: WordLearningTask = ctx.task
        hidden = int(ctx.host.model.config.hidden_size)
        self.value_head = ppo.ValueHead(hidden).to(ctx.host.device)
        # PPO's own optimizer over the policy and the value head, as trl's PPOTrainer builds it
        # (Adam, constant lr): its moments are not the CLM AdamW's, though the weights are shared.
        self.ppo_optimizer = torch.optim.Adam(
            [*ctx.host.model.parameters(), *self.value_head.parameters()], s.tnd_ppo_lr
        )
        self.reference: ModelHost | None = None
        self.reference_optimizer: torch.optim.Optimizer | None = None
        if s.tnd_reference and s.tnd_mode != "clm_only":
            # Same initial weights as the student: A_n is what CLM alone would have reached by step n.
            self.reference = ModelHost(
                copy.deepcopy(ctx.host.model), ctx.host.tokenizer, ctx.host.placement, replace(ctx.host.metadata)
            )
            self.reference_optimizer = self.reference.make_optimizer(s.lr)
        self.own_corpus: list[str] | None = None  # with tnd_corpus: the only sentences it has
        self.steps_done = 0
        self.trial_counts: Counter[str] = Counter()
        self.test_words = self.task.test_words()
        self.last: Interaction | None = None
        self.run_dir = ctx.run_dir / RUN_DIR if ctx.run_dir is not None else None

    # --- the schedule ------------------------------------------------------------------------

    def is_interactive(self, step: int) -> bool:
        s = self.ctx.settings
        if s.tnd_mode == "clm_only":
            return False
        phase = s.tnd_clm_steps + s.tnd_interactive_steps
        return (step - 1) % phase >= s.tnd_clm_steps

    def corpus_batch(self, step: int) -> list[str]:
        """The step's batch of child-directed texts (`tnd_sentences_per_text` sentences each): fresh
        (or, with `tnd_corpus`, drawn from the student's own few), and the same again after a
        resume. The own texts do not depend on the seed, so students that differ in seed own the
        same data."""
        s = self.ctx.settings
        k = s.tnd_sentences_per_text
        if not s.tnd_corpus:
            return self.task.texts(s.batch_size, s.seed * 1_000_003 + step, k)
        if self.own_corpus is None:
            self.own_corpus = self.task.texts(max(1, s.tnd_corpus // k), OWN_CORPUS_SEED, k)
        return random.Random(s.seed * 1_000_003 + step).choices(self.own_corpus, k=s.batch_size)

    async def step(self, step: int) -> StepResult:
        batch = self.corpus_batch(step)
        if self.is_interactive(step):
            result = await self.interact(step, batch)
        else:
            result = await self.train_on_corpus(batch)
        if self.reference is not None and self.reference_optimizer is not None:
            corpus = [clm_example(text) for text in batch]
            await self.reference.run(self.reference.train_step, corpus, self.reference_optimizer)
        self.steps_done = step
        return result

    async def train_on_corpus(self, batch: list[str]) -> StepResult:
        """A CLM update on corpus texts."""
        return await self.train_on([Tagged(clm_example(text), (), "corpus") for text in batch])

    # --- the interactive step ----------------------------------------------------------------

    def prompts_of(self, batch: list[str]) -> list[str]:
        """The first tnd_prompt_tokens tokens of each text, as text."""
        tokenizer, k = self.ctx.host.tokenizer, self.ctx.settings.tnd_prompt_tokens
        return [str(tokenizer.decode(encode(tokenizer, text, add_bos=False)[:k])) for text in batch]

    async def interact(self, step: int, batch: list[str]) -> StepResult:
        s = self.ctx.settings
        seed = s.seed * 1_000_003 + step * 1_000
        record = Interaction(step, self.prompts_of(batch))
        if s.tnd_mode != "demo_only":
            record.trials = await self.continue_prompts(self.ctx.host, record.prompts, seed)
        lessons: tuple[str, ...] = ()
        teacher: str | None = None
        demos: list[tuple[str, str]] = []  # (prompt, continuation)
        if s.tnd_mode != "trial_only":
            received = await self.ctx.teachers.lesson("Demonstrate", self.demonstrate_request(record.prompts, seed))
            if received is None:  # the teacher's guard blocked the whole set: a CLM step instead
                log.info("step %d: no demonstrations (blocked); a CLM step instead", step)
                return await self.train_on_corpus(batch)
            # Each demonstration carries its prompt; one for a prompt we did not send is not used.
            asked = set(record.prompts)
            demos = [
                (d.prompt, d.continuation) for d in received.lesson.demonstrations.demonstrations if d.prompt in asked
            ]
            record.demos = [continuation for _, continuation in demos]
            lessons, teacher = (received.lesson_id,), received.teacher
        samples = [(p, t, "trial") for p, t in zip(record.prompts, record.trials, strict=False)]
        samples += [(p, d, "demo") for p, d in demos]
        record.kinds = [kind for _, _, kind in samples]
        prompts, responses = [p for p, _, _ in samples], [c for _, c, _ in samples]
        if s.tnd_mode != "double_clm":
            teacher = teacher or (await self.ctx.teachers.pick()).node_id
            await self.reward(record, samples, teacher, seed)
            await self.ctx.host.run(self.ppo_update, record, prompts, responses)
        record.clm_loss = await self.ctx.host.run(
            self.ctx.host.train_step,
            [clm_example(f"{p} {c}".strip()) for p, c in zip(prompts, responses, strict=True)],
            self.ctx.optimizer,
        )
        self.trial_counts.update(w for trial in record.trials for w in trial.split() if w in self.task.vocabulary)
        self.last = record
        if teacher is not None:
            self.ctx.teachers.credit(teacher, True)
        if record.losses is None:  # double_clm: the interactive step's CLM update alone
            log.info("step %d: CLM on %d trials + %d demos (no PPO)", step, len(record.trials), len(demos))
            return StepResult(record.clm_loss, len(samples), frozenset(lessons), frozenset(), tuple(record.kinds))
        log.info(
            "step %d: PPO on %d trials + %d demos, mean reward %.3f (A_n %.3f), value loss %.4f",
            step,
            record.kinds.count("trial"),
            record.kinds.count("demo"),
            sum(record.rewards) / max(1, len(record.rewards)),
            record.baseline,
            record.losses.value.item(),
        )
        return StepResult(
            record.losses.total.item(), len(samples), frozenset(lessons), frozenset(), tuple(record.kinds)
        )

    async def reward(self, record: Interaction, samples: list[tuple[str, str, str]], teacher: str, seed: int) -> None:
        """Step 4: each sample's reward minus the baseline A_n. R_phi scores the trials (and, with
        tnd_demo_reward age_predictor, the demonstrations; with tnd_reference, the reference
        student's continuations, whose mean is A_n); a demonstration is otherwise worth the
        teacher's age, log2(tnd_teacher_steps)."""
        s = self.ctx.settings
        scored = [
            i for i, (_, _, kind) in enumerate(samples) if kind == "trial" or s.tnd_demo_reward == "age_predictor"
        ]
        texts = [f"{samples[i][0]} {samples[i][1]}".strip() for i in scored]
        if self.reference is not None:
            record.reference_texts = await self.continue_prompts(self.reference, record.prompts, seed)
            texts += [f"{p} {c}".strip() for p, c in zip(record.prompts, record.reference_texts, strict=True)]
        scores = await self.age_scores(teacher, texts) if texts else []
        by_sample = dict(zip(scored, scores, strict=False))
        teacher_age = math.log2(s.tnd_teacher_steps)
        record.scores = [by_sample.get(i, teacher_age) for i in range(len(samples))]
        reference_scores = scores[len(scored) :]
        record.baseline = sum(reference_scores) / len(reference_scores) if reference_scores else math.log2(record.step)
        record.rewards = [score - record.baseline for score in record.scores]

    def demonstrate_request(self, prompts: list[str], seed: int) -> teacher_pb2.DemonstrateRequest:
        s = self.ctx.settings
        sampling = teacher_pb2.SamplingParams(
            max_new_tokens=s.tnd_max_new_tokens, temperature=1.0, top_k=s.tnd_top_k, top_p=s.tnd_top_p, seed=seed + 1
        )
        return teacher_pb2.DemonstrateRequest(
            task=s.task, prompts=prompts, sampling=sampling, banned_words=s.tnd_banned_words
        )

    async def continue_prompts(self, host: ModelHost, prompts: list[str], seed: int) -> list[str]:
        """Continuations sampled the way TnD's trials are (temperature 1, top-k, top-p), seeded per prompt."""
        s = self.ctx.settings
        params = [
            SamplingParams(
                max_new_tokens=s.tnd_max_new_tokens,
                temperature=1.0,
                top_k=s.tnd_top_k,
                top_p=s.tnd_top_p,
                seed=seed + i,
            )
            for i in range(len(prompts))
        ]
        outputs = await host.run(host.generate_sync, prompts, params)
        return [output.text.strip() for output in outputs]

    async def age_scores(self, teacher: str, texts: list[str]) -> list[float]:
        request = teacher_pb2.ScoreRequest(
            task=self.ctx.settings.task,
            kind=teacher_pb2.SCORE_KIND_AGE,
            items=[teacher_pb2.ScoreItem(text=text) for text in texts],
        )
        scores = await self.ctx.teachers.score(teacher, request)
        if scores is None:
            name = self.ctx.teachers.name_of(teacher)
            raise LessonRequestError(
                f"teacher {name} gave no age-predictor scores; TnD needs a teacher with teacher.age_predictor "
                "(see `agora tnd train-reward`)"
            )
        return scores

    def ppo_update(self, record: Interaction, prompts: list[str], responses: list[str]) -> None:
        """Step 5 (on the model's thread): old log-probabilities, values and whitened advantages over
        the whole batch, then one epoch of shuffled minibatches, each one step of PPO's Adam (trl's
        PPOTrainer.step with ppo_epochs 1 and no KL: its reference model is the policy itself)."""
        s, host = self.ctx.settings, self.ctx.host
        with host._lock:
            batch = ppo.encode_responses(host.tokenizer, prompts, responses, host.max_positions, host.device)
            mask = batch.response_mask
            with torch.no_grad():
                host.model.train(False)
                old_logprobs, old_values = ppo.policy_forward(host.model, self.value_head, batch)
                rewards = ppo.last_token_rewards(torch.tensor(record.rewards, device=host.device), mask)
                advantages, returns = ppo.gae(rewards, old_values, mask, gamma=1.0, lam=s.tnd_gae_lambda)
                advantages = ppo.whiten(advantages, mask)
            size = s.tnd_ppo_minibatch or len(prompts)
            order = torch.randperm(
                len(prompts), generator=torch.Generator().manual_seed(s.seed * 1_000_003 + record.step)
            )
            parameters = [*host.model.parameters(), *self.value_head.parameters()]
            host.model.train()
            for start in range(0, len(prompts), size):
                rows = order[start : start + size].to(host.device)
                logprobs, values = ppo.policy_forward(host.model, self.value_head, batch.rows(rows))
                losses = ppo.ppo_loss(
                    logprobs,
                    old_logprobs[rows],
                    values,
                    old_values[rows],
                    advantages[rows],
                    returns[rows],
                    mask[rows],
                    clip=s.tnd_clip,
                    value_clip=s.tnd_value_clip,
                    vf_coef=s.tnd_vf_coef,
                )
                self.ppo_optimizer.zero_grad(set_to_none=True)
                losses.total.backward()  # type: ignore[no-untyped-call]
                torch.nn.utils.clip_grad_norm_(parameters, 1.0)
                self.ppo_optimizer.step()
                record.minibatch_losses.append(losses)
                host.metadata.train_steps += 1
            self.ppo_optimizer.zero_grad(set_to_none=True)
            host.model.train(False)
        record.advantages, record.mask, record.losses = advantages, mask, record.minibatch_losses[-1]

    # --- evaluation: accuracy, and word surprisal for the learning curves ----------------------

    def accuracy(self, examples: Sequence[Example], batch_size: int = 16) -> float:
        """The share of held-out contexts the student, greedy, continues into a grammatical sentence.

        A TnD student learns raw text, never the task's answer format, so the format-based grade
        would always say 0; this asks the same question (a sentence that starts with the context
        and fits the grammar) of its plain continuation, cut after the first end mark."""
        host = self.ctx.host
        if not examples:
            return math.nan
        correct = 0
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            params = [SamplingParams(max_new_tokens=SENTENCE_TOKENS) for _ in chunk]
            outputs = host.generate_sync([e.question for e in chunk], params)
            correct += sum(
                completes_a_sentence(self.task, example.question, output.text)
                for example, output in zip(chunk, outputs, strict=True)
            )
        return correct / len(examples)

    def evaluate(self, n: int, seed: int = 0) -> dict[str, float]:
        scores = super().evaluate(n, seed)
        if self.run_dir is not None:
            from student.word_metrics import word_surprisal

            surprisal = word_surprisal(
                self.ctx.host, self.task, self.test_words, self.ctx.settings.tnd_probe_contexts, seed
            )
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.write_run_info()
            line = {"step": self.steps_done, "surprisal": surprisal, "trial_counts": dict(self.trial_counts)}
            with (self.run_dir / SURPRISAL_FILE).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
        return scores

    def write_run_info(self) -> None:
        assert self.run_dir is not None
        s = self.ctx.settings
        info = {"algorithm": self.name, "mode": s.tnd_mode, "task": s.task, "seed": s.seed, "steps": s.steps}
        info |= {"c": s.tnd_clm_steps, "r": s.tnd_interactive_steps, "reference": self.reference is not None}
        info |= {"banned_words": list(s.tnd_banned_words), "demo_reward": s.tnd_demo_reward}
        (self.run_dir / "run.json").write_text(json.dumps(info, indent=1) + "\n")

    # --- resume -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps_done": self.steps_done, "trial_counts": dict(self.trial_counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps_done = int(state.get("steps_done", 0))
        self.trial_counts = Counter({str(k): int(v) for k, v in state.get("trial_counts", {}).items()})
        self.forget_measurements_after(self.steps_done)

    def forget_measurements_after(self, step: int) -> None:
        """Drop surprisal lines of updates a crash lost: they are measured again when redone."""
        if self.run_dir is None or not (path := self.run_dir / SURPRISAL_FILE).exists():
            return
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))

    def save_files(self, directory: Path) -> None:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
            str(directory / VALUE_HEAD_FILE),
        )
        groups: dict[str, Any] = {}
        tensors, groups["ppo"] = optimizer_tensors(self.ppo_optimizer)
        save_file(tensors, str(directory / PPO_OPTIMIZER_FILE))
        if self.reference is not None and self.reference_optimizer is not None:
            with self.reference._lock:
                save_model(self.reference.model, str(directory / REFERENCE_FILE))
                tensors, groups["reference"] = optimizer_tensors(self.reference_optimizer)
            save_file(tensors, str(directory / "reference_optimizer.safetensors"))
        (directory / TRAINING_STATE_FILE).write_text(json.dumps(groups) + "\n")

    def load_files(self, directory: Path) -> None:
        if not (directory / VALUE_HEAD_FILE).exists():
            return
        self.value_head.load_state_dict(load_file(str(directory / VALUE_HEAD_FILE), device=str(self.ctx.host.device)))
        groups = json.loads((directory / TRAINING_STATE_FILE).read_text())
        if "ppo" in groups:  # checkpoints from before PPO had its own optimizer keep only the value head
            load_optimizer(self.ppo_optimizer, load_file(str(directory / PPO_OPTIMIZER_FILE)), groups["ppo"])
        if self.reference is not None and self.reference_optimizer is not None and "reference" in groups:
            load_model(self.reference.model, str(directory / REFERENCE_FILE), device=str(self.reference.device))
            load_optimizer(
                self.reference_optimizer,
                load_file(str(directory / "reference_optimizer.safetensors")),
                groups["reference"],
            )
