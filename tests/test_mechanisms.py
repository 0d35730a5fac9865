"""The DP mechanisms themselves: PATE's noisy argmax (GNMax, LNMax) and DP-ICL's keyword
selection (propose-test-release, else the exponential mechanism over a public vocabulary)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from node.privacy.keywords import INSTRUCTION_WORDS, keyword_counts, select_keywords, vocabulary
from node.privacy.pate import NoisyVote, tally


def test_tally_counts_one_vote_per_shard_and_abstentions() -> None:
    assert tally([0, 2, 2, -1, 1, 2], 3) == [1, 1, 3]


@pytest.mark.parametrize("vote", [NoisyVote(sigma=1.0), NoisyVote(laplace_epsilon=5.0)])
def test_a_clear_majority_wins_under_little_noise(vote: NoisyVote) -> None:
    rng = np.random.default_rng(0)
    winners = Counter(vote.argmax([2, 30, 1], rng) for _ in range(200))
    assert winners[1] == 200


def test_heavy_noise_lets_any_class_win_sometimes() -> None:
    """With sigma far above the counts the answer is close to uniform: the vote is private."""
    rng = np.random.default_rng(1)
    winners = Counter(NoisyVote(sigma=100.0).argmax([0, 8, 0], rng) for _ in range(3000))
    assert all(600 < winners[i] < 1400 for i in range(3)), winners


def test_a_noisy_vote_needs_exactly_one_noise() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        NoisyVote()
    with pytest.raises(ValueError, match="exactly one"):
        NoisyVote(sigma=1.0, laplace_epsilon=1.0)
    assert NoisyVote(sigma=1.0).mechanism == "gnmax" and NoisyVote(laplace_epsilon=1.0).mechanism == "lnmax"


def test_a_response_counts_each_public_word_once_and_private_words_never() -> None:
    vocab = vocabulary(["sort the words"])
    counts = keyword_counts(["sort sort the zyzzyva", "sort words"], vocab)
    index = {w: i for i, w in enumerate(vocab)}
    assert counts[index["sort"]] == 2 and counts[index["the"]] == 1 and counts[index["words"]] == 1
    assert "zyzzyva" not in index and counts.sum() == 4


def test_a_wide_gap_is_released_exactly_by_propose_test_release() -> None:
    vocab = vocabulary([])
    responses = ["sort the words alphabetically"] * 200  # 200 shards agree: the top 4 are stable
    release = select_keywords(
        responses, vocab, 4, em_epsilon=1.0, ptr_epsilon=1.0, ptr_delta=1e-6, rng=np.random.default_rng(0)
    )
    assert release.route == "ptr" and sorted(release.keywords) == ["alphabetically", "sort", "the", "words"]
    assert release.distance == 99


def test_a_narrow_gap_falls_back_to_the_exponential_mechanism() -> None:
    vocab = vocabulary([])
    responses = ["sort the words", "reverse the letters", "sort each word"]
    rng = np.random.default_rng(0)
    picks: Counter[str] = Counter()
    for _ in range(300):
        release = select_keywords(responses, vocab, 2, em_epsilon=20.0, ptr_epsilon=1.0, ptr_delta=1e-6, rng=rng)
        assert release.route == "exponential" and len(set(release.keywords)) == 2
        assert set(release.keywords) <= INSTRUCTION_WORDS
        picks.update(release.keywords)
    # High counts are exponentially more likely: "the" and "sort" (2 shards each) lead.
    assert {word for word, _ in picks.most_common(2)} == {"the", "sort"}


def test_k_must_leave_room_in_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="k\\*"):
        select_keywords(["x"], ["a", "b"], 2, em_epsilon=1, ptr_epsilon=1, ptr_delta=1e-6, rng=np.random.default_rng())
