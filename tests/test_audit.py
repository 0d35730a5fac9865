"""The Secret Sharer audit: canary parsing, candidate pools, ranks on real tiny models, `agora audit`."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from node.cli import main
from node.llm import ContinuationScore, ModelHost, TinySpec, TrainingExample
from node.privacy.audit import (
    Canary,
    CanaryError,
    audit,
    candidate_pool,
    exposure,
    first_names,
    parse_canaries,
    parse_canary,
    secret_rank,
)
from node.tasks import get_task

SPEC = TinySpec(layers=2, dim=64, heads=4, max_positions=128)
PLANTED = ["my pin code is 4821", "the nurse is called maren"]  # word_sorting's vocabulary spells both


@pytest.fixture(scope="module")
def memorized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny word_sorting model trained on nothing but the planted canaries, until it knows them."""
    host = ModelHost.build(get_task("word_sorting"), SPEC, seed=0)
    optimizer = host.make_optimizer(lr=3e-3)
    examples = [TrainingExample("", text) for text in PLANTED]
    losses = [host.train_step(examples, optimizer) for _ in range(150)]
    assert losses[-1] < 0.1 < losses[0]  # it did learn them
    out = tmp_path_factory.mktemp("audit") / "memorized"
    host.save(out)
    host.close()
    return out


# -- canaries ----------------------------------------------------------------------------------


def test_parse_canary_splits_context_and_secret() -> None:
    assert parse_canary("my pin code is 4821") == Canary("my pin code is ", "4821", "digits")
    assert parse_canary("  the nurse's name is Maren \n") == Canary("the nurse's name is ", "Maren", "name")
    assert parse_canary("account:0042") == Canary("account:", "0042", "digits")  # leading zeros are digits too
    assert parse_canary("code 12 for Ines") == Canary("code 12 for ", "Ines", "name")
    assert parse_canary("my pin code is 4821").masked == "my pin code is ****"
    assert parse_canary("call Bartholomew").masked == "call ****"  # a name's mask hides its length


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("no secret here.", "must end with its secret"),
        ("room 12a", "must end with its secret"),
        ("4821", "nothing before the secret"),
        ("Maren", "nothing before the secret"),
    ],
)
def test_parse_canary_rejects_lines_without_a_secret(line: str, why: str) -> None:
    with pytest.raises(CanaryError, match=why):
        parse_canary(line)


def test_parse_canaries_skips_comments_and_names_the_bad_line() -> None:
    canaries = parse_canaries("# planted on May 3\n\nmy pin code is 4821\n  # indented comment\nhi Maren\n")
    assert [(c.secret, c.line) for c in canaries] == [("4821", 3), ("Maren", 5)]
    with pytest.raises(CanaryError, match=r"^line 2: a canary must end"):
        parse_canaries("my pin code is 4821\nthe code is secret.\n")
    with pytest.raises(CanaryError, match="no canaries"):
        parse_canaries("# nothing\n\n")


# -- candidates --------------------------------------------------------------------------------


def test_first_names_are_many_distinct_real_words() -> None:
    names = first_names()
    assert len(names) >= 1000
    assert len({name.casefold() for name in names}) == len(names)
    assert all(name.isalpha() for name in names)
    assert {"Mary", "James", "Maria"} <= set(names)


def test_digit_pool_has_n_distinct_codes_of_the_secrets_length() -> None:
    canary = parse_canary("my pin code is 0042")
    pool = candidate_pool(canary, 1000, random.Random(7))
    assert len(pool) == len(set(pool)) == 1000
    assert pool[0] == "0042" and pool.count("0042") == 1
    assert all(len(c) == 4 and c.isdigit() for c in pool)
    assert pool == candidate_pool(canary, 1000, random.Random(7))  # deterministic per seed
    assert pool != candidate_pool(canary, 1000, random.Random(8))
    # All 100 two-digit codes fit; a 101st does not exist.
    assert sorted(candidate_pool(parse_canary("room 07"), 100, random.Random(0))) == [f"{i:02d}" for i in range(100)]
    with pytest.raises(CanaryError, match="only 100 candidates"):
        candidate_pool(parse_canary("room 07"), 101, random.Random(0))
    with pytest.raises(CanaryError, match="at least 2"):
        candidate_pool(canary, 1, random.Random(0))


@pytest.mark.parametrize(("secret", "style"), [("Mary", str.istitle), ("mary", str.islower), ("MARY", str.isupper)])
def test_name_pool_has_n_distinct_names_in_the_secrets_case(secret: str, style: object) -> None:
    canary = parse_canary(f"the nurse is called {secret}")
    pool = candidate_pool(canary, 1000, random.Random(3))
    folded = [name.casefold() for name in pool]
    assert len(pool) == len(set(folded)) == 1000
    assert pool[0] == secret and folded.count("mary") == 1  # "Mary" is in the list, but drawn only as the secret
    known = {name.casefold() for name in first_names()}
    assert set(folded) <= known
    assert callable(style) and all(style(name) for name in pool)
    assert pool == candidate_pool(canary, 1000, random.Random(3))
    assert pool != candidate_pool(canary, 1000, random.Random(4))


# -- ranks and exposure ------------------------------------------------------------------------


def test_exposure_is_log2_n_at_rank_0_and_0_at_the_bottom() -> None:
    assert exposure(0, 1000) == pytest.approx(math.log2(1000))
    assert exposure(3, 1024) == pytest.approx(8.0)
    assert exposure(999, 1000) == pytest.approx(0.0)
    assert exposure(499.5, 1000) == pytest.approx(1.0, abs=0.01)  # chance is one bit
    for rank in (-1, 1000):
        with pytest.raises(ValueError, match="rank must lie in"):
            exposure(rank, 1000)


def test_secret_rank_counts_higher_scores_and_half_the_ties() -> None:
    def score(tokens: str, mean: float) -> ContinuationScore:
        return ContinuationScore(tuple(tokens), (mean,) * len(tokens))

    secret = score("ab", -1.0)
    others = [score("cd", -0.5), score("ef", -2.0), score("gh", -1.0), score("ab", -1.0), score("ij", -0.1)]
    assert secret_rank(secret, others) == 2 + 2 / 2
    assert secret_rank(secret, [score("x", -3.0)] * 5) == 0


def test_untrained_model_ranks_secrets_near_the_middle() -> None:
    host = ModelHost.build(get_task("word_sorting"), SPEC, seed=1)
    rng = random.Random(11)
    lines = [f"my pin code is {rng.randrange(10**4):04d}" for _ in range(4)]
    lines += [f"the nurse is called {rng.choice(first_names()).lower()}" for _ in range(4)]
    report = audit(host, [parse_canary(line) for line in lines], runs=2, candidates=1000, seed=0)
    # An untrained model has a fixed taste in codes and names, so one secret can land anywhere;
    # averaged over 8 secrets the rank sits near chance (499.5): 348-638 over model seeds 0-5.
    assert 200 <= report.mean_rank <= 800
    assert report.rank0_count <= 1
    assert report.mean_exposure < 4  # 0.75-2.2 bits over seeds 0-5; memorized is 9.97
    again = audit(host, [parse_canary(lines[0])], runs=2, candidates=1000, seed=0)
    assert again.results[0].ranks == report.results[0].ranks  # same seed, same draws, same ranks


def test_a_tokenizer_that_cannot_spell_names_gives_the_chance_rank() -> None:
    """Every name is <unk> to word_learning's vocabulary: all candidates tie, so no fake rank 0."""
    host = ModelHost.build(get_task("word_learning"), SPEC, seed=0)
    [result] = audit(host, [parse_canary("the nurse is called Maren")], runs=2, candidates=100).results
    assert result.unknown_tokens >= 1
    assert all(40 <= rank <= 59 for rank in result.ranks)  # 49.5 when every candidate ties


def test_memorized_canaries_rank_0_with_full_exposure(memorized: Path) -> None:
    host = ModelHost.load(memorized)
    calls: list[tuple[int, int]] = []
    report = audit(
        host, [parse_canary(line) for line in PLANTED], runs=3, candidates=1000, progress=lambda *a: calls.append(a)
    )
    assert [r.ranks for r in report.results] == [(0, 0, 0), (0, 0, 0)]
    assert report.rank0_count == 6
    assert report.mean_exposure == pytest.approx(math.log2(1000))
    assert calls[-1][0] == calls[-1][1] > 1000  # progress reached its total (unique candidates over runs)


# -- the command -------------------------------------------------------------------------------


def _canaries_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "canaries.txt"
    path.write_text(text)
    return path


def test_agora_audit_table_and_json(memorized: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    canaries = _canaries_file(tmp_path, "# planted\n" + "\n".join(PLANTED) + "\n")
    base = ["audit", "--model", str(memorized), "--task", "word_sorting", "--canaries", str(canaries), "--runs", "3"]
    assert main([*base, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "my pin code is ****" in out and "the nurse is called ****" in out
    assert "4821" not in out and "maren" not in out.lower()  # the audit does not leak what it audits
    assert out.count("3/3") == 2 and out.count("9.97") >= 2
    assert "mean rank 0.0 (chance 499.5), rank 0 in 6 of 6 runs" in out

    assert main([*base, "--format", "json", "--candidates", "200"]) == 0
    raw = capsys.readouterr().out
    document = json.loads(raw)
    assert "4821" not in raw and "maren" not in raw.lower()
    assert document["candidates"] == 200 and document["runs"] == 3
    assert [c["canary"] for c in document["canaries"]] == ["my pin code is ****", "the nurse is called ****"]
    assert document["summary"]["rank0_count"] == 6
    assert document["summary"]["mean_exposure"] == pytest.approx(math.log2(200))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--model": "missing-model"}, "no model directory at"),
        ({"--model": "not-a-model"}, "has no config.json"),
        ({"--task": "astrology"}, "unknown task 'astrology'"),
        ({"--task": "arithmetic"}, "was built for task 'word_sorting'"),
        ({"--candidates": "1"}, "--candidates must be at least 2"),
        ({"--runs": "0"}, "--runs must be at least 1"),
        ({"--canaries": "missing.txt"}, "cannot read the canaries file"),
        ({"canaries": "my pin code is 4821\nnothing secret here.\n"}, "line 2: a canary must end with its secret"),
        ({"canaries": "my pin code is 4821\nroom 7\n"}, "line 2: its secret allows only 10 candidates"),
    ],
)
def test_agora_audit_bad_input_exits_2_with_one_line(
    change: dict[str, str], message: str, memorized: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "not-a-model").mkdir()
    canaries = _canaries_file(tmp_path, change.pop("canaries", PLANTED[0]))
    options = {"--model": str(memorized), "--task": "word_sorting", "--canaries": str(canaries)}
    options |= {
        key: str(tmp_path / value) if key in ("--model", "--canaries") else value for key, value in change.items()
    }
    assert main(["audit", *(part for pair in options.items() for part in pair)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("agora audit: ") and captured.err.count("\n") == 1
    assert message in captured.err
