"""The pieces of `agora simulate` one at a time, without starting a node process: the simulation's
config and its faults, the canary it plants, the audit's word canaries, the settings each node is
given, TnD students that own a few sentences (`student.tnd_corpus`), `agora tnd train-teacher
--private`, and the usage errors of `agora simulate`."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.app import Node
from node.cli import main
from node.config import ConfigError, load_settings
from node.privacy.audit import Canary, CanaryError, candidate_pool, space_size
from node.sim.config import (
    DIGITS_CANARY,
    TND_STUDENT,
    WORD_CANARY,
    Fault,
    SimConfig,
    SimNode,
    load_sim_config,
    parse_student_setting,
)
from node.sim.faults import FaultSchedule
from node.sim.network import SimNetwork, TeacherAssets, baseline_student
from node.sim.teacher_prep import simulation_canary
from node.tasks.word_learning import WordLearningTask
from student.build import build_student
from student.tnd import OWN_CORPUS_SEED, TnDLearner
from teacher.tnd_teacher import TeacherTrainConfig
from tests.students import student_settings


def names_and_roles(config: SimConfig) -> list[tuple[str, str]]:
    return [(node.name, node.role) for node in config.node_list()]


def config_error(path: Path | None = None, **overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_sim_config(path, overrides)
    return str(caught.value)


# --- SimConfig / load_sim_config -------------------------------------------------------------


def test_the_default_network_is_a_teacher_two_students_and_a_baseline() -> None:
    config = load_sim_config(None, {})
    assert names_and_roles(config) == [
        ("tutor", "teacher"),
        ("ada", "student"),
        ("ben", "student"),
        ("solo", "baseline"),
    ]
    assert config.task == "word_learning" and config.algorithm == "tnd"
    assert config.students() == TND_STUDENT
    assert config.canary_text() == WORD_CANARY


def test_flags_set_the_node_count_and_drop_the_baseline() -> None:
    four = load_sim_config(None, {"nodes": 4, "steps": None})  # None: a flag that was not given
    assert names_and_roles(four) == [
        ("tutor", "teacher"),
        ("ada", "student"),
        ("ben", "student"),
        ("cyd", "student"),
        ("solo", "baseline"),
    ]
    assert four.steps == SimConfig().steps
    no_baseline = load_sim_config(None, {"baseline": False})
    assert names_and_roles(no_baseline) == [("tutor", "teacher"), ("ada", "student"), ("ben", "student")]


def test_a_yaml_node_list_is_honoured_and_sorted_teachers_first(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    sim = {
        "steps": 120,
        "baseline": False,  # ignored: the list says what runs
        "nodes": [
            {"name": "solo", "role": "baseline"},
            {"name": "ada", "role": "student", "settings": {"student": {"seed": 5}}},
            {"name": "tutor", "role": "teacher", "settings": {"privacy": {"epsilon_budget": 4}}},
            {"name": "ben", "role": "student", "settings": {"model": {"layers": 2}}},
        ],
    }
    path.write_text(yaml.safe_dump(sim), encoding="utf-8")
    config = load_sim_config(path, {"algorithm": "tnd", "task": None})
    assert names_and_roles(config) == [
        ("tutor", "teacher"),
        ("ada", "student"),
        ("ben", "student"),
        ("solo", "baseline"),
    ]
    settings = {node.name: node.settings for node in config.node_list()}
    assert settings == {
        "tutor": {"privacy": {"epsilon_budget": 4}},
        "ada": {"student": {"seed": 5}},
        "ben": {"model": {"layers": 2}},
        "solo": {},
    }
    assert config.steps == 120
    # flags win over the file
    assert load_sim_config(path, {"steps": 7}).steps == 7


def test_an_sft_network_needs_no_teacher() -> None:
    config = load_sim_config(None, {"algorithm": "sft", "nodes": [{"name": "ada", "role": "student"}]})
    assert names_and_roles(config) == [("ada", "student")]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"nodes": [{"name": "ada", "role": "teacher"}, {"name": "ada", "role": "student"}]},
            "node names must be unique",
        ),
        ({"nodes": [{"name": "ada", "role": "student"}]}, "needs a teacher"),
        ({"nodes": [{"name": "tutor", "role": "teacher"}, {"name": "solo", "role": "baseline"}]}, "needs a student"),
        ({"nodes": [{"name": "tutor", "role": "teacher"}, {"name": "bad name!", "role": "student"}]}, "nodes"),
        ({"nodes": [{"name": "tutor", "role": "teacher"}, {"name": "ada", "role": "pupil"}]}, "nodes"),
        ({"bogus": 1}, "bogus"),
        ({"nodes": 1}, "nodes must be at least 2"),
        ({"steps": 0}, "steps"),
        ({"faults": [Fault(action="kill", node="zed", step=3)]}, "no node is called 'zed'"),
        ({"faults": [Fault(action="kill", node="ada", step=400)]}, "not before the last learning step"),
        ({"task": "nope"}, "unknown task 'nope'"),
        ({"task": "arithmetic"}, "algorithm tnd learns the word_learning corpus"),
    ],
)
def test_bad_simulation_configs_name_the_problem(overrides: dict[str, Any], expected: str) -> None:
    message = config_error(**overrides)
    assert message.startswith("invalid simulation config")
    assert expected in message


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"name": "bad name!", "role": "student"}, "not a node name"),
        ({"name": "ada", "role": "pupil"}, "'teacher', 'student' or 'baseline'"),
        ({"name": "ada", "role": "student", "setings": {}}, "setings"),
    ],
)
def test_a_bad_node_in_the_list_is_named(node: dict[str, Any], expected: str) -> None:
    message = config_error(nodes=[{"name": "tutor", "role": "teacher"}, node])
    assert expected in message


def test_a_bad_node_is_rejected_by_its_own_model() -> None:
    with pytest.raises(ValueError, match="'bad name!' is not a node name"):
        SimNode(name="bad name!", role="student")
    with pytest.raises(ValueError, match="role"):
        SimNode.model_validate({"name": "ada", "role": "pupil"})


def test_a_yaml_file_that_is_not_a_mapping_or_is_missing_is_a_config_error(tmp_path: Path) -> None:
    listed = tmp_path / "list.yaml"
    listed.write_text("- tutor\n- ada\n", encoding="utf-8")
    assert "must be a mapping" in config_error(listed)
    assert "cannot read" in config_error(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("nodes: [unclosed\n", encoding="utf-8")
    assert "not valid YAML" in config_error(broken)
    bad_field = tmp_path / "bad.yaml"
    bad_field.write_text("stepz: 3\n", encoding="utf-8")
    message = config_error(bad_field)
    assert str(bad_field) in message and "stepz" in message


def test_fault_parse() -> None:
    assert Fault.parse("kill", "ada@20") == Fault(action="kill", node="ada", step=20)
    assert str(Fault.parse("restart", "tutor@0")) == "restart tutor@0"
    for text in ("ada", "@3", "ada@x", "ada@-1", "ada@", "a b@3"):
        with pytest.raises(ConfigError, match="expected NODE@STEP"):
            Fault.parse("kill", text)


# --- FaultSchedule ---------------------------------------------------------------------------


def kill(text: str) -> Fault:
    return Fault.parse("kill", text)


def restart(text: str) -> Fault:
    return Fault.parse("restart", text)


def test_a_student_is_killed_at_its_own_step_and_a_teacher_at_the_networks() -> None:
    schedule = FaultSchedule([kill("ada@10"), kill("tutor@12")])
    # ben is far ahead (network step 15), ada is not at 10 yet: only the teacher's kill is due
    assert schedule.due(15, {"ada": 5, "ben": 15}, True) == [kill("tutor@12")]
    assert schedule.due(15, {"ada": 9, "ben": 15}, True) == []
    assert schedule.due(15, {"ada": 10, "ben": 15}, True) == [kill("ada@10")]
    assert not schedule
    assert schedule.due(100, {}, False) == []  # returned faults are gone


def test_a_restart_waits_for_its_nodes_kill_even_when_its_step_is_earlier() -> None:
    schedule = FaultSchedule([restart("ada@10"), kill("ada@12"), restart("ben@11")])
    assert schedule.due(11, {"ada": 11, "ben": 11}, True) == [restart("ben@11")]  # only ada's restart waits
    assert schedule.due(11, {"ada": 11, "ben": 11}, True) == []
    fired = schedule.due(12, {"ada": 12, "ben": 12}, True)
    assert fired[0] == kill("ada@12")
    fired += schedule.due(12, {"ben": 12}, True)
    assert fired == [kill("ada@12"), restart("ada@10")]
    assert not schedule


def test_restarts_fire_at_once_when_no_student_runs_but_after_their_kill() -> None:
    schedule = FaultSchedule([kill("ada@10"), restart("ada@50"), restart("tutor@40")])
    # every student is down: the network's clock stopped, so due restarts must not wait for it
    assert schedule.due(0, {}, False) == [restart("tutor@40")]  # ada's restart still waits for ada's kill
    assert schedule.due(10, {"ada": 10}, True) == [kill("ada@10")]
    assert schedule.due(0, {}, False) == [restart("ada@50")]
    assert not schedule


def test_an_empty_schedule_is_false() -> None:
    assert not FaultSchedule()
    assert FaultSchedule([kill("ada@1")])


# --- the canary --------------------------------------------------------------------------------


def test_the_word_learning_canary_is_a_word_among_the_other_nouns() -> None:
    canary = simulation_canary(SimConfig())
    vocabulary = WordLearningTask().vocabulary
    assert canary.kind == "word"
    assert canary.secret == "blanket"
    assert canary.context.endswith("the ") and canary.context + canary.secret == WORD_CANARY
    assert "blanket" not in canary.words
    assert len(canary.words) == len(set(canary.words)) > 50
    assert all(vocabulary[word] & vocabulary["blanket"] and "NOUN" in vocabulary[word] for word in canary.words)
    # every noun but the secret is a rival, and nothing else is
    assert set(canary.words) == {w for w, tags in vocabulary.items() if "NOUN" in tags} - {"blanket"}


def test_a_word_canary_must_be_words_of_the_vocabulary() -> None:
    with pytest.raises(ConfigError, match="unknown: zorblax"):
        simulation_canary(SimConfig(canary="grandma hides the zorblax"))
    with pytest.raises(ConfigError, match="2 or more words"):
        simulation_canary(SimConfig(canary="blanket"))


def test_elsewhere_the_canary_ends_in_digits() -> None:
    canary = simulation_canary(SimConfig(task="arithmetic", algorithm="tripost"))
    assert (canary.kind, canary.secret, canary.context) == ("digits", "4821", "the vault code is ")
    assert canary.context + canary.secret == DIGITS_CANARY
    with pytest.raises(ConfigError, match="canary"):
        simulation_canary(SimConfig(task="arithmetic", algorithm="tripost", canary="no secret here!"))


# --- the audit's "word" canaries -----------------------------------------------------------------


def test_a_word_canary_draws_its_candidates_from_its_rivals() -> None:
    rivals = ("ball", "cup", "dog", "hat", "key")
    canary = Canary("grandma hides the ", "blanket", "word", words=rivals)
    assert space_size(canary) == 1 + len(rivals)
    assert space_size(Canary("the ", "blanket", "word", words=(*rivals, "blanket"))) == 1 + len(rivals)
    for seed in range(20):
        pool = candidate_pool(canary, 4, random.Random(seed))
        assert pool[0] == "blanket" and len(pool) == 4
        assert len(set(pool)) == 4 and set(pool[1:]) <= set(rivals)
    everything = candidate_pool(canary, space_size(canary), random.Random(0))
    assert sorted(everything) == sorted(["blanket", *rivals])
    with pytest.raises(CanaryError, match="allows only 6 candidates"):
        candidate_pool(canary, 7, random.Random(0))
    with pytest.raises(CanaryError, match="at least 2"):
        candidate_pool(canary, 1, random.Random(0))


def test_the_simulation_canary_audits_among_the_nouns() -> None:
    canary = simulation_canary(SimConfig())
    pool = candidate_pool(canary, 100, random.Random(3))
    assert pool[0] == "blanket" and "blanket" not in pool[1:]
    assert len(set(pool)) == 100 and set(pool[1:]) <= set(canary.words)


# --- each node's settings ------------------------------------------------------------------------


def assets(root: Path, tnd: bool = True) -> TeacherAssets:
    """What prepare_teacher hands over: R_phi for TnD, else private JSONL."""
    reward, private = (root / "models" / "reward", None) if tnd else (None, root / "private.jsonl")
    return TeacherAssets(root / "models" / "teacher", reward, private, root / "canaries.txt")


def test_every_node_gets_its_role_its_peers_and_the_simulations_choices(tmp_path: Path) -> None:
    config = SimConfig(seed=10, steps=30, eval_every=5, eval_n=16, epsilon_budget=6.0)
    network = SimNetwork(config, tmp_path)
    teacher = assets(tmp_path)
    settings = {name: network.settings(node, teacher) for name, node in network.nodes.items()}
    assert list(settings) == ["tutor", "ada", "ben", "solo"]

    addresses = {name: node.address for name, node in network.nodes.items()}
    metrics = [node.metrics_address for node in network.nodes.values()]
    assert len(set(addresses.values()) | set(metrics)) == 2 * len(addresses)  # every port its own
    for name, node_settings in settings.items():
        assert node_settings["node"]["name"] == name
        assert node_settings["node"]["listen"] == node_settings["node"]["advertise"] == addresses[name]
        assert node_settings["node"]["data_dir"] == str(tmp_path / "nodes" / name)
        assert sorted(node_settings["peers"]["seeds"]) == sorted(a for n, a in addresses.items() if n != name)
        assert node_settings["privacy"] == {"epsilon_budget": 6.0, "canaries_file": str(teacher.canaries_file)}

    tutor = settings["tutor"]
    assert tutor["node"]["roles"] == ["teacher"] and "student" not in tutor
    assert tutor["model"] == {"source": str(teacher.model)}
    assert tutor["teacher"] == {"tasks": ["word_learning"], "age_predictor": str(teacher.age_predictor)}

    for offset, name in enumerate(["ada", "ben"], 1):
        student = settings[name]["student"]
        assert settings[name]["node"]["roles"] == ["student"] and "teacher" not in settings[name]
        assert student["task"] == "word_learning" and student["algorithm"] == "tnd"
        assert (student["steps"], student["eval_every"], student["eval_n"]) == (30, 5, 16)
        assert student["seed"] == 10 + offset
        assert student["tnd_corpus"] == 64 and student["tnd_prompt_tokens"] == 2
        assert "tnd_mode" not in student

    solo = settings["solo"]["student"]
    assert solo["tnd_mode"] == "clm_only" and solo["algorithm"] == "tnd"
    assert solo["seed"] == settings["ada"]["student"]["seed"]  # the first student's start, no teacher
    assert solo["tnd_corpus"] == 64

    # every dict is a valid agora config
    for name, node_settings in settings.items():
        loaded = load_settings(overrides=node_settings)
        assert loaded.node.name == name
        assert loaded.privacy.epsilon_budget == 6.0
    assert load_settings(overrides=settings["solo"]).student.tnd_mode == "clm_only"
    assert load_settings(overrides=settings["ben"]).student.tnd_corpus == 64


def test_a_nodes_own_settings_override_the_simulations(tmp_path: Path) -> None:
    nodes = [
        SimNode(name="tutor", role="teacher", settings={"privacy": {"epsilon_budget": 4}}),
        SimNode(name="ada", role="student", settings={"student": {"seed": 42, "tnd_corpus": 8}}),
        SimNode(name="ben", role="student", settings={"model": {"layers": 2}}),
        SimNode(name="solo", role="baseline", settings={"student": {"tnd_mode": "tnd"}}),
    ]
    network = SimNetwork(SimConfig(nodes=nodes), tmp_path)
    teacher = assets(tmp_path)
    settings = {name: network.settings(node, teacher) for name, node in network.nodes.items()}
    # merged into the section, not replacing it
    assert settings["tutor"]["privacy"] == {"epsilon_budget": 4, "canaries_file": str(teacher.canaries_file)}
    assert settings["ada"]["student"]["seed"] == 42 and settings["ada"]["student"]["tnd_corpus"] == 8
    assert settings["ada"]["student"]["steps"] == SimConfig().steps
    assert settings["ben"]["model"] == {"layers": 2}
    assert settings["solo"]["student"]["tnd_mode"] == "tnd"

    network.write_configs(teacher)
    for name, node in network.nodes.items():
        assert node.config_path == tmp_path / "nodes" / name / "agora.yaml"
        loaded = load_settings(node.config_path)
        assert loaded.node.name == name
    assert load_settings(network.nodes["ada"].config_path).student.seed == 42
    assert load_settings(network.nodes["ben"].config_path).model.layers == 2
    assert load_settings(network.nodes["tutor"].config_path).privacy.epsilon_budget == 4


def test_other_algorithms_get_no_tnd_defaults_and_an_sft_baseline(tmp_path: Path) -> None:
    assert baseline_student("tnd") == {"algorithm": "tnd", "tnd_mode": "clm_only"}
    for algorithm in ("tripost", "yoda", "social", "sft"):
        assert baseline_student(algorithm) == {"algorithm": "sft"}
    config = SimConfig(task="arithmetic", algorithm="tripost", student_settings={"batch_size": 4})
    network = SimNetwork(config, tmp_path)
    teacher = assets(tmp_path, tnd=False)
    settings = {name: network.settings(node, teacher) for name, node in network.nodes.items()}
    private = {"arithmetic": str(tmp_path / "private.jsonl")}
    assert settings["tutor"]["teacher"] == {"tasks": ["arithmetic"], "private_data": private}
    for name in ("ada", "ben"):
        student = settings[name]["student"]
        assert student["algorithm"] == "tripost" and student["batch_size"] == 4
        assert not any(key.startswith("tnd_") for key in student)
    assert settings["solo"]["student"]["algorithm"] == "sft" and settings["solo"]["student"]["batch_size"] == 4
    for node_settings in settings.values():
        load_settings(overrides=node_settings)


def test_student_flags_set_every_students_settings_over_the_simulations(tmp_path: Path) -> None:
    flags = dict(parse_student_setting(text) for text in ["social_use=in_context", "student.social_context_tokens=256"])
    assert flags == {"social_use": "in_context", "social_context_tokens": 256}
    config = load_sim_config(None, {"task": "arithmetic", "algorithm": "social"}, flags)
    network = SimNetwork(config, tmp_path)
    teacher = assets(tmp_path, tnd=False)
    for name in ("ada", "ben"):
        student = load_settings(overrides=network.settings(network.nodes[name], teacher)).student
        assert (student.algorithm, student.social_use, student.social_context_tokens) == ("social", "in_context", 256)
    # over sim.yaml's student_settings, or else over the algorithm's demo defaults
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump({"student_settings": {"batch_size": 4, "social_use": "both"}}))
    assert load_sim_config(path, {"task": "arithmetic", "algorithm": "social"}, flags).students() == {
        "batch_size": 4,
        **flags,
    }
    assert load_sim_config(None, {}, {"tnd_corpus": 8}).students() == {**TND_STUDENT, "tnd_corpus": 8}
    for text, problem in [
        ("social_use", "expected SETTING=VALUE"),
        ("social_uses=in_context", "student.social_uses is not a setting"),
        ("social_use=sideways", "Input should be 'in_context', 'fine_tune' or 'both'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(problem)):
            parse_student_setting(text)


# --- student.tnd_corpus ----------------------------------------------------------------------------


@pytest.fixture
def tnd_learners() -> Iterator[Callable[..., TnDLearner]]:
    """Real TnD learners (a tiny word-level model, no teacher needed to draw batches), built the way
    `agora learn` builds them; the nodes are constructed, never started."""
    nodes: list[Node] = []

    def build(**student: Any) -> TnDLearner:
        node = Node(student_settings([], task="word_learning", algorithm="tnd", batch_size=4, **student))
        nodes.append(node)
        run = build_student(node.settings, node.identity.node_id, node.store, node.client, node.view, node.metrics)
        assert isinstance(run.learner, TnDLearner)
        return run.learner

    yield build
    for node in nodes:
        node.store.close()


def batches(learner: TnDLearner, steps: int = 20) -> list[list[str]]:
    return [learner.corpus_batch(step) for step in range(1, steps + 1)]


def test_a_student_with_tnd_corpus_draws_every_batch_from_its_own_few_sentences(
    tnd_learners: Callable[..., TnDLearner],
) -> None:
    owned = WordLearningTask().sentences(5, seed=OWN_CORPUS_SEED)
    ada = tnd_learners(tnd_corpus=5, seed=1)
    ben = tnd_learners(tnd_corpus=5, seed=2)
    ada_batches, ben_batches = batches(ada), batches(ben)
    assert all(len(batch) == 4 for batch in ada_batches)
    assert {s for batch in ada_batches for s in batch} <= set(owned)
    assert {s for batch in ben_batches for s in batch} <= set(owned)
    assert len({s for batch in ada_batches for s in batch}) > 1
    # the same sentences owned whatever the seed; the seed only changes the draw
    assert ada.own_corpus == ben.own_corpus == owned
    assert ada_batches != ben_batches
    # the same batch again for the same step (a resumed run sees what it would have seen)
    assert batches(ada) == ada_batches


def test_without_tnd_corpus_every_batch_is_fresh(tnd_learners: Callable[..., TnDLearner]) -> None:
    learner = tnd_learners(tnd_corpus=0, seed=1)
    drawn = batches(learner)
    assert len({s for batch in drawn for s in batch}) > 5
    assert learner.own_corpus is None
    assert drawn[0] == WordLearningTask().sentences(4, seed=1 * 1_000_003 + 1)


# --- agora tnd train-teacher --private -----------------------------------------------------------


def test_train_teacher_rejects_private_words_outside_the_vocabulary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private = tmp_path / "private.txt"
    private.write_text("# the canary\ngrandma hides the key under the zorblax\n", encoding="utf-8")
    out = tmp_path / "teacher"
    code = main(["tnd", "train-teacher", "--out", str(out), "--steps", "1", "--private", str(private)])
    assert code == 2
    err = capsys.readouterr().err
    assert "zorblax" in err and str(private) in err
    assert err.rstrip().endswith("words outside the word_learning vocabulary: zorblax")  # comments are not read
    assert not out.exists()

    code = main(["tnd", "train-teacher", "--out", str(out), "--private", str(tmp_path / "absent.txt")])
    assert code == 2 and "--private" in capsys.readouterr().err


def test_private_repeats_must_not_be_negative(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="private_repeats"):
        TeacherTrainConfig(private_repeats=-1)
    assert TeacherTrainConfig(private=("grandma hides the key",), private_repeats=0).private_repeats == 0
    private = tmp_path / "private.txt"
    private.write_text(WORD_CANARY + "\n", encoding="utf-8")
    command = ["tnd", "train-teacher", "--out", str(tmp_path / "t"), "--steps", "1", "--corpus", "1"]
    code = main([*command, "--device", "cpu", "--private", str(private), "--private-repeats", "-1"])
    assert code == 2 and "private_repeats must not be negative" in capsys.readouterr().err


# --- agora simulate: usage errors ----------------------------------------------------------------


def test_simulate_rejects_a_fault_without_a_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--kill", "ada", "--out", str(tmp_path / "run")]) == 2
    assert "expected NODE@STEP" in capsys.readouterr().err
    assert main(["simulate", "--restart", "zed@3", "--out", str(tmp_path / "run")]) == 2
    assert "no node is called 'zed'" in capsys.readouterr().err
    assert main(["simulate", "--nodes", "1", "--out", str(tmp_path / "run")]) == 2
    assert "nodes must be at least 2" in capsys.readouterr().err
    assert main(["simulate", "--student", "social_uses=in_context", "--out", str(tmp_path / "run")]) == 2
    assert "student.social_uses is not a setting" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_simulate_will_not_overwrite_an_earlier_runs_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    (out / "nodes").mkdir(parents=True)
    assert main(["simulate", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out / "nodes") in err and "earlier run" in err
    file = tmp_path / "file"
    file.write_text("", encoding="utf-8")
    assert main(["simulate", "--out", str(file)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_simulate_help_config_lists_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--help-config"]) == 0
    listed = capsys.readouterr().out
    fields = {line.split()[0] for line in listed.splitlines() if line.startswith("  ") and not line.startswith("   ")}
    assert fields == set(SimConfig.model_fields)
    assert "default 'word_learning'" in listed and "default []" in listed
