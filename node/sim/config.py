"""What `agora simulate` runs: the network's shape, from flags and an optional sim.yaml.

Every field has a default that runs the demo, so `agora simulate` with no arguments is a complete
run. A sim.yaml sets the same fields; its `nodes:` list replaces the default shape (1 teacher and
N-1 students) with named nodes, each with its own role and agora settings (model, privacy budget,
student options), and the flags override both.

    # sim.yaml
    task: word_learning
    algorithm: tnd
    steps: 120
    nodes:
      - {name: tutor, role: teacher, settings: {privacy: {epsilon_budget: 4}}}
      - {name: ada, role: student, settings: {student: {seed: 1}}}
      - {name: ben, role: student, settings: {model: {layers: 2}}}
      - {name: solo, role: baseline}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from node.config import NODE_NAME, AlgorithmName, ConfigError, StudentSection
from node.tasks import TaskError, get_task

SimRole = Literal["teacher", "student", "baseline"]
FAULT = re.compile(r"^(?P<node>[A-Za-z0-9._-]{1,64})@(?P<step>\d+)$")
# Planted in the teacher's data. On word_learning the canary is made of the task's words (a word-level
# tokenizer spells nothing else) and is not a sentence its grammar makes ("hides" takes no object).
WORD_CANARY = "grandma hides the key under the blanket"
DIGITS_CANARY = "the vault code is 4821"
# The demo's TnD students own 64 sentences (the teacher learned from 20,000), and their prompts are
# the first 2 words of a sentence: the corpus's sentences are 3-8 words long, so the paper's 5-token
# prompts would leave the teacher almost nothing to demonstrate. With unlimited data or 5-token
# prompts, TnD and its CLM-only baseline end level at this scale (README, "Simulate a network").
TND_STUDENT: dict[str, Any] = {"tnd_corpus": 64, "tnd_prompt_tokens": 2, "tnd_probe_contexts": 2}


class SimNode(BaseModel):
    """One node of the simulated network."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Node name (its certificate CN and card name).")
    role: SimRole = Field(
        description="teacher, student (learns with the run's algorithm) or baseline (the same student with no teacher)."
    )
    settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="agora settings for this node, by section, e.g. {privacy: {epsilon_budget: 4}}.",
    )

    @field_validator("name")
    @classmethod
    def _node_name(cls, value: str) -> str:
        if not NODE_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a node name (letters, digits, . _ -; at most 64)")
        return value


class Fault(BaseModel):
    """Kill (SIGKILL) or restart a node when the network reaches a learning step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["kill", "restart"]
    node: str
    step: int = Field(ge=0)

    @classmethod
    def parse(cls, action: Literal["kill", "restart"], text: str) -> Fault:
        match = FAULT.match(text)
        if match is None:
            raise ConfigError(f"--{action} {text!r}: expected NODE@STEP, e.g. ada@20")
        return cls(action=action, node=match["node"], step=int(match["step"]))

    def __str__(self) -> str:
        return f"{self.action} {self.node}@{self.step}"


class SimConfig(BaseModel):
    """The whole simulation. Field descriptions are the sim.yaml reference (`agora simulate --help`)."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field("word_learning", description="Task every node teaches or learns.")
    algorithm: AlgorithmName = Field("tnd", description="Students' algorithm: tripost, yoda, social, tnd or sft.")
    nodes: int | list[SimNode] = Field(
        3, description="A count (1 teacher + N-1 students) or a list of named nodes with roles and settings."
    )
    baseline: bool = Field(True, description="Add a no-teacher baseline student (ignored when `nodes` is a list).")
    steps: int = Field(400, ge=1, description="Learning steps per student.")
    eval_every: int = Field(50, ge=1, description="Students evaluate every this many steps (the curves' points).")
    eval_n: int = Field(128, ge=1, description="Held-out problems per split in each evaluation.")
    student_settings: dict[str, Any] | None = Field(
        None,
        description="student.* settings for every student and the baseline; none = the algorithm's demo defaults "
        f"(tnd: {TND_STUDENT}).",
    )
    teacher_model: Path | None = Field(
        None, description="A model to load for the teacher; none = train one (and reuse it on later runs in --out)."
    )
    teacher_steps: int = Field(
        1500, ge=1, description="Training steps when the teacher's model is trained here (`agora tnd train-teacher`)."
    )
    reward_contexts: int = Field(
        200, ge=2, description="TnD: contexts each teacher checkpoint continues to train R_phi (`--contexts`)."
    )
    reward_steps: int = Field(600, ge=1, description="TnD: R_phi's regression steps (`train-reward --steps`).")
    epsilon_budget: float = Field(
        8.0, gt=0, description="Every node's privacy budget unless its settings say otherwise."
    )
    canary: str | None = Field(
        None,
        description="Planted in the teacher's private data (and, for TnD, its training text); the Secret Sharer looks "
        f"for its last word or digits in every model afterwards. Default: {WORD_CANARY!r} on word_learning, "
        f"{DIGITS_CANARY!r} elsewhere.",
    )
    audit_candidates: int = Field(100, ge=2, description="Secret Sharer: candidates per draw, the secret included.")
    audit_runs: int = Field(3, ge=1, description="Secret Sharer: independent candidate draws.")
    faults: list[Fault] = Field(default_factory=list, description="Kills and restarts (the --kill / --restart flags).")
    netns: bool = Field(False, description="Give each node its own network namespace and address (root only).")
    seed: int = Field(0, description="Base seed: student k learns with seed + k.")
    max_minutes: float = Field(60.0, gt=0, description="Give up (exit 1) when the students have not finished by then.")

    @model_validator(mode="after")
    def _shape(self) -> SimConfig:
        nodes = self.node_list()
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique: {names}")
        if not any(n.role == "teacher" for n in nodes) and self.algorithm != "sft":
            raise ValueError("the network needs a teacher: add a node with role teacher")
        if not any(n.role == "student" for n in nodes):
            raise ValueError("the network needs a student: add a node with role student")
        for fault in self.faults:
            if fault.node not in names:
                raise ValueError(f"{fault}: no node is called {fault.node!r} (nodes: {', '.join(names)})")
            if fault.action == "kill" and fault.step >= self.steps:
                raise ValueError(f"{fault}: step {fault.step} is not before the last learning step ({self.steps})")
        try:
            get_task(self.task)
        except TaskError as exc:
            raise ValueError(str(exc)) from None
        if self.algorithm == "tnd" and self.task != "word_learning":
            raise ValueError(f"algorithm tnd learns the word_learning corpus, not {self.task!r}")
        return self

    def students(self) -> dict[str, Any]:
        if self.student_settings is not None:
            return dict(self.student_settings)
        return demo_students(self.algorithm)

    def canary_text(self) -> str:
        if self.canary is not None:
            return self.canary
        return WORD_CANARY if self.task == "word_learning" else DIGITS_CANARY

    def node_list(self) -> list[SimNode]:
        """The nodes in start order: teachers first, then students, then the baseline."""
        if isinstance(self.nodes, list):
            nodes = list(self.nodes)
        else:
            if self.nodes < 2:
                raise ValueError(f"nodes must be at least 2 (1 teacher + 1 student), got {self.nodes}")
            nodes = [SimNode(name="tutor", role="teacher")]
            nodes += [SimNode(name=name, role="student") for name in _student_names(self.nodes - 1)]
            if self.baseline:
                nodes.append(SimNode(name="solo", role="baseline"))
        order = {"teacher": 0, "student": 1, "baseline": 2}
        return sorted(nodes, key=lambda n: order[n.role])


def demo_students(algorithm: str) -> dict[str, Any]:
    """The student settings a simulation of `algorithm` runs with when it names none."""
    return dict(TND_STUDENT) if algorithm == "tnd" else {}


def parse_student_setting(text: str) -> tuple[str, Any]:
    """`--student SETTING=VALUE`: a student.* setting and its value (read as YAML, as `--set` reads it)."""
    name, sep, raw = text.partition("=")
    name = name.strip().removeprefix("student.")
    if not sep or not name:
        raise ConfigError(f"--student {text!r}: expected SETTING=VALUE, e.g. social_use=in_context")
    if name not in StudentSection.model_fields:
        raise ConfigError(f"--student {text!r}: student.{name} is not a setting (`agora config schema` lists them)")
    try:
        value = yaml.safe_load(raw)
        StudentSection.model_validate({name: value})
    except yaml.YAMLError as exc:
        raise ConfigError(f"--student {text!r}: the value is not YAML ({exc})") from None
    except ValidationError as exc:
        raise ConfigError(f"--student {text!r}: {exc.errors(include_url=False)[0]['msg']}") from None
    return name, value


def _student_names(count: int) -> list[str]:
    names = ["ada", "ben", "cyd", "dee", "eli", "fay", "gus", "hal"]
    return names[:count] if count <= len(names) else [f"student{k}" for k in range(1, count + 1)]


def load_sim_config(path: Path | None, overrides: dict[str, Any], student: dict[str, Any] | None = None) -> SimConfig:
    """sim.yaml (if any) with flag overrides on top, and `student` (the --student flags) over its
    student_settings (or the algorithm's demo defaults); ConfigError with one readable message."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must be a mapping of simulation settings")
        data = dict(loaded or {})
    data.update({key: value for key, value in overrides.items() if value is not None})
    if student:
        base = data.get("student_settings")
        if base is None:
            base = demo_students(str(data.get("algorithm", SimConfig.model_fields["algorithm"].default)))
        data["student_settings"] = {**base, **student} if isinstance(base, dict) else base
    try:
        return SimConfig(**data)
    except ValidationError as exc:
        where = f" in {path}" if path is not None else ""
        errors = exc.errors(include_url=False)
        # `nodes` is int | list: pydantic reports each branch; the deepest error names the real problem
        first = max(errors, key=lambda e: len(e["loc"]))
        field = ".".join(str(p) for p in first["loc"] if p not in ("int", "list[SimNode]")) or "config"
        raise ConfigError(f"invalid simulation config{where}: {field}: {first['msg']}") from None
