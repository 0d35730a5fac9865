"""Node settings: one pydantic-settings model, read from YAML, AGORA_* env vars and CLI flags.

Precedence, lowest first: built-in defaults < YAML file (``--config``) < environment
(``AGORA_<SECTION>__<FIELD>``, e.g. ``AGORA_NODE__LISTEN=0.0.0.0:7000``) < CLI flags.
Every field has a default and a one-line description; ``agora config schema`` prints them all.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

Role = Literal["teacher", "student"]
ALL_ROLES: tuple[Role, ...] = ("teacher", "student")
AlgorithmName = Literal["tripost", "yoda", "social", "tnd", "sft"]


class ConfigError(Exception):
    """A config that cannot be used; the message names the field and the problem."""


def split_host_port(value: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 hosts may be bracketed); ValueError when malformed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port in 0..65535, got {value!r}")
    return host.strip("[]"), int(port_text)


def join_host_port(host: str, port: int) -> str:
    """HOST:PORT, with an IPv6 host bracketed; the inverse of split_host_port."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback_host(host: str) -> bool:
    """True for localhost and addresses in 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_unspecified_host(host: str) -> bool:
    """True for the wildcard addresses 0.0.0.0 and ::, which a server binds but no peer can dial."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _host_port(value: str) -> str:
    split_host_port(value)
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]


# A node name (also its certificate's CN) and a node id (hex SHA-256 of its Ed25519 public key).
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NODE_ID = re.compile(r"[0-9a-f]{64}")


class Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NodeSection(Section):
    name: str = Field(
        "agora-node",
        min_length=1,
        max_length=64,
        pattern=rf"^{NODE_NAME.pattern}$",
        description="Node name: shown in logs and cards; the CN of its mTLS certificate.",
    )
    listen: HostPort = Field("127.0.0.1:50051", description="gRPC listen address HOST:PORT (port 0 = any free port).")
    advertise: str = Field(
        "", description="Address peers dial (HOST:PORT; port 0 = the bound port); empty = the listen address."
    )
    roles: list[Role] = Field(
        default_factory=lambda: list(ALL_ROLES), description="Roles this node holds: teacher, student or both."
    )
    data_dir: Path = Field(Path("agora-data"), description="Directory for the node key, SQLite store and checkpoints.")
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, le=1024**3, description="Largest gRPC message accepted or sent, in bytes."
    )
    max_concurrent_rpcs: int = Field(
        256, ge=1, description="RPCs served at once; more are refused with RESOURCE_EXHAUSTED."
    )
    shutdown_grace_s: float = Field(10.0, ge=0, description="On SIGTERM/SIGINT, how long in-flight calls may finish.")
    drain_notice_s: float = Field(
        0.5, ge=0, description="On shutdown, how long health reports NOT_SERVING before new calls are refused."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")
    log_format: Literal["human", "json"] = Field(
        "human", description="Log lines for people (human) or machines (json)."
    )

    @field_validator("advertise")
    @classmethod
    def _advertise_address(cls, value: str) -> str:
        if value:
            host, _ = split_host_port(value)
            if is_unspecified_host(host):
                raise ValueError(f"{value!r} is a wildcard address; advertise one that peers can dial")
        return value

    @field_validator("roles")
    @classmethod
    def _roles_unique(cls, value: list[Role]) -> list[Role]:
        if not value:
            raise ValueError("a node needs at least one role (teacher, student)")
        return list(dict.fromkeys(value))


class ModelSection(Section):
    source: str = Field(
        "tiny", description="Model to host: 'tiny' (built from the spec below), a local directory or a hub id."
    )
    revision: str = Field("main", description="Hub revision (branch, tag or commit) when source is a hub id.")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="auto, cpu, cuda, cuda:N or mps.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype.")
    family: Literal["llama", "gpt2"] = Field("llama", description="Tiny model architecture family.")
    layers: int = Field(4, ge=1, le=64, description="Tiny model: transformer layers.")
    dim: int = Field(128, ge=8, le=8192, description="Tiny model: hidden size.")
    heads: int = Field(4, ge=1, le=128, description="Tiny model: attention heads (must divide dim).")
    batch_window_ms: float = Field(
        5.0, ge=0, le=1000, description="Generation requests arriving within this window are batched together."
    )
    max_batch_size: int = Field(16, ge=1, le=1024, description="Most prompts generated together in one batch.")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> ModelSection:
        if self.dim % self.heads:
            raise ValueError(f"model.heads ({self.heads}) must divide model.dim ({self.dim})")
        return self


class PeersSection(Section):
    seeds: list[str] = Field(
        default_factory=list,
        description="Peers to join through: HOST:PORT or dns:///NAME:PORT (all addresses it resolves to).",
    )
    gossip_interval_s: float = Field(2.0, gt=0, description="Seconds between gossip rounds.")
    gossip_fanout: int = Field(3, ge=1, description="Peers contacted per gossip round.")
    ping_interval_s: float = Field(1.0, gt=0, description="Seconds between heartbeats to each peer.")
    ping_timeout_s: float = Field(2.0, gt=0, description="A heartbeat not answered within this many seconds is missed.")
    suspect_after_missed: int = Field(3, ge=1, description="Missed heartbeats before a peer is suspect.")
    dead_after_s: float = Field(15.0, gt=0, description="Seconds without contact before a peer is dead.")
    forget_after_s: float = Field(300.0, gt=0, description="Seconds without contact before a dead peer is forgotten.")
    rejoin_interval_s: float = Field(
        30.0,
        gt=0,
        description="Seconds between Hellos to the seeds once joined (heals partitions); while no peer is alive, "
        "every gossip interval.",
    )
    call_timeout_s: float = Field(10.0, gt=0, description="Deadline of an outgoing call to a peer.")
    max_attempts: int = Field(4, ge=1, le=20, description="Tries per call when a peer answers UNAVAILABLE.")
    retry_backoff_s: float = Field(
        0.2, gt=0, description="First back-off before a retry; doubles each time (max 5s), with full jitter."
    )

    @field_validator("seeds")
    @classmethod
    def _seeds_are_addresses(cls, value: list[str]) -> list[str]:
        for seed in value:
            split_host_port(seed.removeprefix("dns:///"))
        return value

    @model_validator(mode="after")
    def _timings_are_ordered(self) -> PeersSection:
        # Suspicion must come before death, and death before forgetting, or a state is skipped.
        suspect_s = self.ping_interval_s * self.suspect_after_missed
        if self.dead_after_s <= suspect_s:
            raise ValueError(
                f"peers.dead_after_s ({self.dead_after_s:g}) must exceed peers.ping_interval_s x "
                f"peers.suspect_after_missed ({suspect_s:g}), or peers die before they are suspect"
            )
        if self.forget_after_s <= self.dead_after_s:
            raise ValueError(
                f"peers.forget_after_s ({self.forget_after_s:g}) must exceed peers.dead_after_s ({self.dead_after_s:g})"
            )
        return self


class SecuritySection(Section):
    insecure: bool = Field(False, description="Plaintext gRPC without mTLS; accepted only when listening on loopback.")
    ca_cert: Path | None = Field(None, description="Network CA certificate (PEM); default <data_dir>/certs/ca.crt.")
    cert: Path | None = Field(
        None, description="This node's certificate (PEM), CN = node.name; default <data_dir>/certs/node.crt."
    )
    key: Path | None = Field(
        None, description="This node's certificate private key (PEM); default <data_dir>/certs/node.key."
    )
    allow: list[str] = Field(
        default_factory=list,
        description="The only peers this node accepts calls from and keeps in its view (node ids or certificate "
        "names); empty = any holder of a network certificate.",
    )
    max_clock_skew_s: float = Field(
        30.0, gt=0, description="Largest accepted difference between a signed timestamp and local time."
    )
    replay_cache_size: int = Field(100_000, ge=100, description="Nonces remembered to refuse replayed requests.")
    rate_limit_per_s: float = Field(
        20.0, gt=0, description="Requests per second allowed per peer (token bucket refill)."
    )
    rate_limit_burst: int = Field(40, ge=1, description="Requests a peer may send at once (token bucket size).")

    @field_validator("allow")
    @classmethod
    def _allow_entries(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not (NODE_ID.fullmatch(entry) or NODE_NAME.fullmatch(entry)):
                raise ValueError(f"{entry!r} is neither a node id (64 hex digits) nor a node name")
        return value

    def tls_files(self, data_dir: Path) -> tuple[Path, Path, Path]:
        """(ca_cert, cert, key), with unset paths defaulting to <data_dir>/certs/."""
        certs = data_dir / "certs"
        return (self.ca_cert or certs / "ca.crt", self.cert or certs / "node.crt", self.key or certs / "node.key")


class PrivacySection(Section):
    epsilon_budget: float = Field(8.0, gt=0, description="Total epsilon this teacher may spend on lessons.")
    delta: float = Field(1e-6, gt=0, lt=1, description="Delta at which epsilon is accounted.")
    per_recipient_epsilon: float | None = Field(
        None, gt=0, description="Optional epsilon cap per student; none = only the total."
    )
    canaries_file: Path | None = Field(None, description="File of canary strings that must never leave (one per line).")
    ngram_block: int = Field(
        8, ge=2, description="Block lessons sharing a verbatim n-gram this long with a private record."
    )
    min_edit_distance: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Block lessons closer than this normalized Levenshtein distance to a private record.",
    )
    block_pii: bool = Field(
        False, description="Also block lessons containing e-mail addresses, phone, card or social security numbers."
    )
    shards: int = Field(
        16, ge=2, le=1024, description="Disjoint shards private data is split into for PATE and DP-ICL votes."
    )
    gnmax_sigma: float = Field(
        40.0, gt=0, description="GNMax Gaussian noise std on shard vote counts (answers, labels, example votes)."
    )
    lnmax_epsilon: float | None = Field(
        None, gt=0, description="Use LNMax (Laplace, this epsilon per query) instead of GNMax; none = GNMax."
    )
    keyword_epsilon: float = Field(
        1.0, gt=0, description="DP-ICL: epsilon of the exponential-mechanism top-k* keyword selection per instruction."
    )
    keyword_count: int = Field(8, ge=1, le=64, description="DP-ICL: keywords (k*) selected per instruction.")
    ptr_epsilon: float = Field(0.5, gt=0, description="DP-ICL: epsilon of the propose-test-release gap test.")
    ptr_delta: float = Field(
        1e-9, gt=0, lt=1, description="DP-ICL: delta of a propose-test-release that passes (exact top-k* released)."
    )


class MetricsSection(Section):
    enabled: bool = Field(True, description="Serve Prometheus metrics over HTTP.")
    listen: HostPort = Field("127.0.0.1:9464", description="Metrics HTTP address HOST:PORT (port 0 = any free port).")


class TeacherSection(Section):
    tasks: list[str] = Field(default_factory=list, description="Tasks this node teaches.")
    private_data: dict[str, Path] = Field(
        default_factory=dict, description="Private examples per task: task name -> JSONL file of {input, output}."
    )
    max_batch: int = Field(64, ge=1, description="Largest number of prompts or items accepted in one request.")
    max_new_tokens: int = Field(128, ge=1, description="Default and cap for generated tokens per continuation.")
    examples_per_shard: int = Field(
        8, ge=1, le=64, description="Private examples per shard prompt (n_gen; Social Learning shows 8)."
    )
    temperature: float = Field(0.7, gt=0, le=5, description="Default sampling temperature tau for generated lessons.")
    max_examples: int = Field(16, ge=1, le=256, description="Cap on examples per Exemplify lesson.")
    exemplify_method: Literal["vote", "private_prompt"] = Field(
        "vote",
        description="Exemplify: vote (DP: candidates from a public prompt, chosen by the private shards' "
        "GNMax/LNMax vote) or private_prompt (Social Learning's method, NOT DP: the model writes each example "
        "from a few-shot prompt of private examples; no epsilon is charged or claimed, the leakage guard "
        "checks every example).",
    )
    instruct_method: Literal["keywords", "private_prompt"] = Field(
        "keywords",
        description="Instruct: keywords (DP-ICL: shard instructions aggregated in keyword space) or "
        "private_prompt (Social Learning's method, NOT DP: one instruction the model writes from a few-shot "
        "prompt of private examples, released as written; no epsilon is charged or claimed).",
    )
    max_rounds: int = Field(
        5, ge=1, le=50, description="Critique refuses refinement rounds past this (TriPosT uses 5)."
    )
    max_posed: int = Field(16, ge=1, le=256, description="Cap on generalized variants plus harder levels per Pose.")
    max_text_chars: int = Field(4096, ge=16, description="Longest question, attempt, prompt or item text accepted.")
    age_predictor: Path | None = Field(
        None,
        description="TnD age predictor R_phi (a directory from `agora tnd train-reward`) that Score SCORE_KIND_AGE "
        "serves; none = that score kind is refused.",
    )


class StudentSection(Section):
    task: str = Field("arithmetic", description="Task this node learns.")
    algorithm: AlgorithmName = Field("tripost", description="Learning algorithm: tripost, yoda, social, tnd or sft.")
    steps: int = Field(100, ge=1, description="Learning steps (optimizer updates) to run.")
    eval_every: int = Field(20, ge=1, description="Evaluate on held-out splits every this many steps.")
    eval_spacing: Literal["linear", "log"] = Field(
        "linear",
        description="linear = every eval_every steps; log = as many evaluations (steps / eval_every) spaced evenly "
        "in log(step) from step 1, for learning curves over log steps (TnD's nAoA).",
    )
    checkpoint_every: int = Field(20, ge=1, description="Write a checkpoint every this many steps.")
    seed: int = Field(0, description="Random seed for sampling and data order.")
    batch_size: int = Field(8, ge=1, le=1024, description="Training examples per update.")
    lr: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate: the peak of lr_schedule.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="Learning rate over the run's updates: constant after lr_warmup_steps, or cosine decay from lr "
        "to lr x lr_min_ratio at the schedule's last update (transformers' schedules).",
    )
    lr_warmup_steps: int = Field(0, ge=0, description="Updates of linear warm-up from 0 to lr at the schedule's start.")
    lr_min_ratio: float = Field(0.1, ge=0, le=1, description="The cosine's floor as a fraction of lr.")
    lr_schedule_start: int = Field(
        0,
        ge=0,
        description="Updates of this schedule made before this run (a stage B continuing a stage A's schedule): "
        "the first update takes the schedule's lr at lr_schedule_start + 1.",
    )
    lr_schedule_steps: int | None = Field(
        None, ge=1, description="The schedule's length in updates; none = lr_schedule_start + steps."
    )
    optimizer_state: Literal["fresh", "from_model"] = Field(
        "fresh",
        description="AdamW's state at the start: fresh, or from_model: the optimizer.safetensors saved beside the "
        "model in model.source (a run that continues another's training, e.g. a benchmark's stage B).",
    )
    gold_feedback: bool = Field(
        True,
        description='End every gold rationale the student trains on with "Feedback: <all correct>", as TriPosT\'s '
        "reference does (and trains on), so that the student learns to judge its own answers; false = the bare "
        "rationale.",
    )
    eval_n: int = Field(32, ge=1, le=10_000, description="Held-out problems per split in each evaluation.")
    warmup_steps: int = Field(
        0, ge=0, description="SFT updates on the task's gold rationales before learning from teachers (0 = none)."
    )
    lesson_timeout_s: float = Field(
        180.0, gt=0, description="Deadline of one lesson call; generated lessons take tens of seconds on a CPU."
    )
    teacher_wait_s: float = Field(
        120.0, ge=0, description="How long to keep backing off when no teacher of the task answers before giving up."
    )
    dp_epsilon: float | None = Field(
        None, gt=0, description="Run the gold-rationale SFT under DP-SGD (Opacus) with this target epsilon; none = off."
    )
    dp_delta: float | None = Field(None, gt=0, lt=1, description="DP-SGD delta; none = privacy.delta.")
    dp_expected_batch: int = Field(8, ge=1, description="DP-SGD expected batch (Poisson rate q = this / records).")
    dp_epochs: float = Field(1.0, gt=0, description="DP-SGD epochs over the student's own records.")
    dp_max_grad_norm: float = Field(1.0, gt=0, description="DP-SGD per-example clipping norm C.")
    dp_records: int = Field(256, ge=2, description="The student's own gold-rationale records used under DP-SGD.")
    tripost_iterations: int = Field(3, ge=1, description="TriPosT: collect-then-train iterations (the paper: 3).")
    tripost_questions: int = Field(16, ge=1, description="TriPosT: training questions attempted per iteration.")
    tripost_max_rounds: int = Field(5, ge=1, le=50, description="TriPosT: Critique rounds per trajectory (paper: 5).")
    tripost_min_data: int = Field(
        1, ge=0, description="TriPosT: stop early when an iteration collects fewer trajectories than this."
    )
    tripost_temperature: float = Field(1.0, gt=0, le=5, description="TriPosT: sampling temperature of attempts.")
    tripost_feedback_weight: float = Field(
        1.5, gt=0, description='TriPosT: loss weight of tokens from "Feedback:" on (the paper: 1.5).'
    )
    tripost_epochs: float = Field(
        4.0, gt=0, le=100, description="TriPosT: passes over each iteration's data (the reference: 4 epochs)."
    )
    tripost_schedule: Literal["iteration", "run"] = Field(
        "iteration",
        description="TriPosT: iteration = each iteration trains its data alone for tripost_epochs passes with a "
        "fresh AdamW, warm-up then cosine decay from lr to lr x lr_min_ratio (the reference's new Trainer per "
        "iteration); run = the iterations share student.steps evenly under the run's lr_schedule and one "
        "optimizer, each batch filled with gold problems beside the iteration's data so that the data is still "
        "seen tripost_epochs times (equal compute with an SFT control).",
    )
    tripost_warmup_ratio: float = Field(
        0.2, ge=0, lt=1, description="TriPosT: warm-up share of each iteration's updates (schedule iteration)."
    )
    tripost_turns: bool = Field(
        False,
        description="TriPosT: split each improved trajectory into one example per turn (attempt, feedback, "
        "update), the reference's convert_to_turns; false = one example per trajectory.",
    )
    tripost_attempt_weight: float = Field(
        1.0,
        ge=0,
        description="TriPosT: loss weight of the first attempt in improvement examples (the reference trains on it "
        "at 1; 0 = learn only the feedback and the updates).",
    )
    tripost_attempts: Literal["own", "synthetic"] = Field(
        "own",
        description="TriPosT: improve the student's own sampled attempts (the paper), or synthetic corruptions of "
        "gold rationales (a control: self-improvement data that does not come from the student's errors).",
    )
    yoda_generalized: int = Field(2, ge=0, le=64, description="YODA: generalized variants per basic question (m).")
    yoda_harder_levels: int = Field(2, ge=0, le=64, description="YODA: levels of harder questions (H).")
    yoda_rounds: int = Field(2, ge=1, le=50, description="YODA: refinement rounds with Critique per question (R).")
    yoda_control: Literal["none", "basic_only", "gold_only"] = Field(
        "none", description="YODA control: none, basic_only (no posed questions) or gold_only (no interaction)."
    )
    yoda_questions: int = Field(
        32, ge=1, le=100_000, description="YODA: basic questions per collection; its records are ordered as a whole."
    )
    yoda_order: Literal["curriculum", "shuffled"] = Field(
        "curriculum",
        description="YODA: train each collection basic, then generalized, then harder by level (the paper), or "
        "shuffled (the control that isolates the curriculum).",
    )
    yoda_epochs: float = Field(1.0, gt=0, le=100, description="YODA: passes over each collection, each in its order.")
    yoda_wrong_weight: float = Field(
        0.0,
        ge=0,
        description="YODA: loss weight of the student's answers a critique judged wrong (0 = learn only the feedback "
        "and the verified refinements; 1 = the whole record, an ablation).",
    )
    social_teachers: int = Field(3, ge=1, le=64, description="Social Learning: teachers asked for lessons.")
    social_examples_per_teacher: int = Field(
        4, ge=1, le=256, description="Social Learning: synthetic examples asked of each teacher."
    )
    social_examples: int = Field(4, ge=1, le=4096, description="Social Learning: examples the aggregator keeps (n).")
    social_aggregator: Literal["random", "voting"] = Field(
        "voting", description="Social Learning: pick examples at random, or by the teachers' likelihood votes."
    )
    social_use: Literal["in_context", "fine_tune", "both"] = Field(
        "both", description="Social Learning: lessons used in the prompt, for fine-tuning, or both."
    )
    social_context_tokens: int = Field(
        0,
        ge=0,
        description="Social Learning, in_context and both: most tokens the prompt prefix (the instruction and the "
        "kept examples) may take; 0 = the model's context less room for the longest evaluation question and its "
        "answer, which the prefix never takes in any case. Examples that do not fit are left out whole.",
    )
    social_context_select: Literal["aggregated", "shortest", "random"] = Field(
        "aggregated",
        description="Social Learning: which kept examples go into the prompt prefix, tried in this order and each "
        "left out when it no longer fits the budget: aggregated = the aggregator's order (the best voted first), "
        "shortest = fewest tokens first (the most examples), random = shuffled by student.seed.",
    )
    tnd_mode: Literal["tnd", "trial_only", "demo_only", "clm_only", "double_clm"] = Field(
        "tnd",
        description="TnD: trials and demonstrations, one of them alone (ablations), CLM steps only, or double_clm: "
        "the interactive steps sample trials and demonstrations and take their CLM update but no PPO (the "
        "reference's control for the extra CLM updates an interactive step makes).",
    )
    tnd_corpus: int = Field(
        0,
        ge=0,
        description="TnD: sentences of the corpus the student owns, drawn from again and again "
        "(0 = a fresh batch from the generator at every step: unlimited data).",
    )
    tnd_sentences_per_text: int = Field(
        1,
        ge=1,
        le=32,
        description="TnD: sentences per corpus text (prompts are cut from a text's start, so with more than one a "
        "continuation goes on past the first utterance, as the reference's ~117-token texts do); tnd_corpus still "
        "counts sentences. Pair it with a teacher trained on such texts (`agora tnd train-teacher "
        "--sentences-per-text`).",
    )
    tnd_clm_steps: int = Field(3, ge=1, le=1000, description="TnD: CLM steps before each interactive phase (c).")
    tnd_interactive_steps: int = Field(1, ge=1, le=1000, description="TnD: interactive steps per phase (r).")
    tnd_prompt_tokens: int = Field(5, ge=1, le=64, description="TnD: prompt length, in tokens cut from batch texts.")
    tnd_max_new_tokens: int = Field(24, ge=1, le=512, description="TnD: tokens per trial and per demonstration.")
    tnd_top_k: int = Field(20, ge=0, le=10_000, description="TnD: top-k of the student's trials (0 = off).")
    tnd_top_p: float = Field(0.95, gt=0, le=1, description="TnD: top-p of the student's trials.")
    tnd_clip: float = Field(0.2, gt=0, le=1, description="TnD: PPO ratio clip.")
    tnd_value_clip: float = Field(0.2, gt=0, description="TnD: PPO value clip.")
    tnd_vf_coef: float = Field(0.1, ge=0, description="TnD: value-loss coefficient.")
    tnd_gae_lambda: float = Field(0.95, ge=0, le=1, description="TnD: GAE lambda (gamma is 1).")
    tnd_reference: bool = Field(
        False,
        description="TnD: baseline A_n from a CLM-only reference student trained in lockstep (the reference's "
        "--ref_reward, off in its experiments); false = log2 n.",
    )
    tnd_demo_reward: Literal["teacher_age", "age_predictor"] = Field(
        "teacher_age",
        description="TnD: a demonstration's reward: teacher_age = log2(tnd_teacher_steps) - A_n for every "
        "demonstration (the reference), or age_predictor = R_phi(demonstration) - A_n like a trial.",
    )
    tnd_teacher_steps: int = Field(
        100_000,
        ge=2,
        description="TnD: the teacher's training steps, whose log2 is a demonstration's reward under teacher_age "
        "(the reference's teacher: 100000).",
    )
    tnd_ppo_lr: float = Field(
        2e-5,
        gt=0,
        le=1,
        description="TnD: learning rate of PPO's own Adam (policy and value head, constant), apart from the CLM "
        "updates' AdamW at student.lr under student.lr_schedule (the reference: 2e-5 and 1e-4).",
    )
    tnd_ppo_minibatch: int = Field(
        16,
        ge=0,
        le=4096,
        description="TnD: samples per PPO minibatch; one optimizer step each, one epoch over the interactive "
        "step's trials and demonstrations (trl's mini_batch_size, the reference: 16); 0 = the whole batch.",
    )
    tnd_banned_words: list[str] = Field(
        default_factory=list, description="TnD: words the teacher must not demonstrate (the banned-word teacher)."
    )
    tnd_probe_contexts: int = Field(
        8, ge=1, le=1000, description="TnD: contexts per test word when measuring word surprisal at each evaluation."
    )

    @model_validator(mode="after")
    def _schedule_reaches_the_run(self) -> StudentSection:
        if self.lr_schedule_steps is not None and self.lr_schedule_steps <= self.lr_schedule_start:
            raise ValueError(
                f"student.lr_schedule_steps ({self.lr_schedule_steps}) must exceed student.lr_schedule_start "
                f"({self.lr_schedule_start}): the run would start past the schedule's end"
            )
        return self


# The YAML file's content for the settings being built; a context variable so that the
# pydantic-settings source below can read it without global state leaking between nodes.
_file_data: ContextVar[Mapping[str, Any]] = ContextVar("agora_config_file_data", default=MappingProxyType({}))


class _YamlFileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return _file_data.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get())


class Settings(BaseSettings):
    """Everything a node can be told. See each section's fields for what they mean."""

    model_config = SettingsConfigDict(
        env_prefix="AGORA_", env_nested_delimiter="__", extra="forbid", nested_model_default_partial_update=True
    )

    node: NodeSection = Field(default_factory=NodeSection, description="Identity, addresses and server limits.")
    model: ModelSection = Field(default_factory=ModelSection, description="The causal LM this node hosts.")
    peers: PeersSection = Field(default_factory=PeersSection, description="How the node finds and watches peers.")
    security: SecuritySection = Field(
        default_factory=SecuritySection, description="mTLS, allow-list, replay and rate limits."
    )
    privacy: PrivacySection = Field(default_factory=PrivacySection, description="DP budget and leakage guard.")
    metrics: MetricsSection = Field(default_factory=MetricsSection, description="Prometheus metrics endpoint.")
    teacher: TeacherSection = Field(default_factory=TeacherSection, description="What a teacher node offers.")
    student: StudentSection = Field(default_factory=StudentSection, description="What a student node learns and how.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: CLI flags (passed as init kwargs) > environment > YAML file > defaults.
        return init_settings, env_settings, _YamlFileSource(settings_cls)

    @model_validator(mode="after")
    def _addresses_are_usable(self) -> Settings:
        host, _ = split_host_port(self.node.listen)
        if self.security.insecure and not is_loopback_host(host):
            raise ValueError(
                f"security.insecure is true but node.listen is {self.node.listen!r}: plaintext gRPC is "
                "allowed only on loopback addresses (127.0.0.0/8, ::1, localhost); configure "
                "security.ca_cert, security.cert and security.key for mTLS instead"
            )
        if is_unspecified_host(host) and not self.node.advertise:
            raise ValueError(
                f"node.listen is the wildcard {self.node.listen!r}: set node.advertise to the HOST:PORT "
                "peers should dial (e.g. this machine's address)"
            )
        return self


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections (node:, model:, ...), not a {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse a ``section.field=value`` CLI override; the value is read as a YAML scalar or list."""
    key, sep, raw = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", key.strip()):
        raise ConfigError(f"--set expects SECTION.FIELD=VALUE (e.g. node.name=alice), got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def overrides_to_dict(overrides: list[tuple[list[str], Any]]) -> dict[str, Any]:
    """Turn parsed ``--set`` overrides into the nested mapping Settings accepts."""
    nested: dict[str, Any] = {}
    for path, value in overrides:
        cursor = nested
        for part in path[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[path[-1]] = value
    return nested


def _describe(error: Mapping[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if not location:  # a check across sections; its message names the fields
        return message
    if error["type"] == "extra_forbidden":
        return f"{location}: unknown setting (check the spelling; `agora config schema` lists them all)"
    if error["type"] == "missing":
        return f"{location}: required"
    shown = error.get("input")
    shown_already = shown is None or isinstance(shown, dict | list) or repr(shown) in message
    got = "" if shown_already else f" (got {shown!r})"
    return f"{location}: {message}{got}"


def load_settings(config_file: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the effective settings, or raise ConfigError with one readable message."""
    file_data = _read_yaml(config_file) if config_file is not None else {}
    token = _file_data.set(file_data)
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors(include_url=False)]
        source = f" in {config_file}" if config_file is not None else ""
        head = f"invalid config{source}: "
        raise ConfigError(head + problems[0] if len(problems) == 1 else head + "\n  " + "\n  ".join(problems)) from None
    finally:
        _file_data.reset(token)
