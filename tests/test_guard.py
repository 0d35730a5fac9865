"""The leakage guard (DESIGN §3.3) on real texts: canaries, verbatim n-grams, the semi-global Indel
distance (checked against a slow reference DP), PII patterns, and what its messages must never say."""

from __future__ import annotations

import random
import re
import string
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.privacy.guard import CheckResult, GuardVerdict, LeakageGuard, indel_distance, normalize

RECORD = "Alice paid the invoice from her savings account on Tuesday after the quarterly review meeting ended."
FILLER = "Word sorting is easiest when you compare the first letter, then the second, and so on. " * 3
CANARY = "4821"


def reference_indel(record: str, text: str) -> int:
    """Textbook semi-global Indel DP: free start and end in the text, no substitution."""
    prev = [0] * (len(text) + 1)
    for i in range(1, len(record) + 1):
        cur = [i] + [0] * len(text)
        for j in range(1, len(text) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1)
            if record[i - 1] == text[j - 1]:
                cur[j] = min(cur[j], prev[j - 1])
        prev = cur
    return min(prev)


def result(verdict: GuardVerdict, name: str) -> CheckResult:
    return next(c for c in verdict.checks if c.name == name)


# --- canary ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"The code is {CANARY}.",
        "Remember: 4 8 2 1 is the answer",
        "digits 4-8-2-1 then",
        "4, 8, 2, 1",
        "code4821",
    ],
)
def test_canary_blocked_verbatim_and_spaced(text: str) -> None:
    verdict = LeakageGuard([RECORD], [CANARY]).check(text)
    assert verdict.blocked_by == "canary"
    assert result(verdict, "canary").value == 1.0


def test_canary_case_and_whitespace_insensitive() -> None:
    guard = LeakageGuard([RECORD], ["Marguerite", "blue  Falcon"])
    verdict = guard.check("and then mARGUERITE met the BLUE\n\tfalcon")
    assert result(verdict, "canary").value == 2.0
    assert not verdict.passed
    assert guard.check("M a r g u e r i t e").blocked_by == "canary"


def test_canary_phrase_recited_with_punctuation_and_run_on() -> None:
    guard = LeakageGuard([RECORD], ["the vault code is 4821", "my sisters name is maren"])
    assert result(guard.check("THE VAULT CODE IS: (4 8 2 1)"), "canary").value == 1.0
    assert result(guard.check("so...my sister's name is Marenmaren and the vault-code is 48217"), "canary").value == 2.0
    assert guard.check("the vault code is 4812, my sister is called Mara").passed


def test_bare_canary_errs_towards_blocking() -> None:
    # Documented: a short bare canary also matches inside a longer number (a leak in a run-on).
    assert LeakageGuard([RECORD], [CANARY]).check("148210 is a number").blocked_by == "canary"
    assert LeakageGuard([RECORD], [CANARY]).check("1482 and 10").passed


def test_unrelated_text_passes_every_check() -> None:
    verdict = LeakageGuard([RECORD], [CANARY], block_pii=True).check(FILLER)
    assert verdict.passed and verdict.blocked_by is None and verdict.reason == ""
    assert [c.name for c in verdict.checks] == ["canary", "verbatim_ngram", "levenshtein", "pii"]


def test_pii_check_absent_unless_enabled() -> None:
    verdict = LeakageGuard([RECORD]).check("mail me at someone@example.com")
    assert [c.name for c in verdict.checks] == ["canary", "verbatim_ngram", "levenshtein"]
    assert verdict.passed


# --- verbatim n-gram ------------------------------------------------------------------------


def test_eight_gram_inside_longer_text_blocked() -> None:
    copied = "the invoice from her savings account on tuesday"  # 8 tokens of RECORD
    verdict = LeakageGuard([FILLER, RECORD], ngram=8, min_edit_distance=0).check(f"Note that {copied} -- odd.")
    check = result(verdict, "verbatim_ngram")
    assert verdict.blocked_by == "verbatim_ngram"
    assert check.value == 8.0 and not check.passed
    assert "private record #1" in check.detail


def test_seven_gram_passes_and_reports_exact_run() -> None:
    copied = "the invoice from her savings account on"  # 7 tokens
    verdict = LeakageGuard([RECORD], ngram=8, min_edit_distance=0).check(f"Banks: {copied} are words.")
    check = result(verdict, "verbatim_ngram")
    assert check.passed and check.value == 7.0


def test_longest_run_is_exact_and_punctuation_is_not_a_token() -> None:
    text = "Alice paid the invoice from her savings account on Tuesday after the quarterly review, fine."
    check = result(LeakageGuard([RECORD], min_edit_distance=0).check(text), "verbatim_ngram")
    assert check.value == 14.0  # "alice ... review"; "fine" breaks the run ("meeting" follows in the record)
    spaced = "Alice -- paid (the) invoice: from her savings account; on Tuesday"
    check = result(LeakageGuard([RECORD], min_edit_distance=0).check(spaced), "verbatim_ngram")
    assert check.value == 10.0 and not check.passed  # punctuation in between does not hide a copied run


def test_passing_run_capped_at_sixteen_for_long_ngrams() -> None:
    record = " ".join(f"w{k}" for k in range(40))
    copied = " ".join(f"w{k}" for k in range(5, 25))  # 20 tokens
    check = result(LeakageGuard([record], ngram=30, min_edit_distance=0).check(copied), "verbatim_ngram")
    assert check.passed and check.value == 16.0 and "at least 16" in check.detail
    blocked = result(LeakageGuard([record], ngram=12, min_edit_distance=0).check(copied), "verbatim_ngram")
    assert not blocked.passed and blocked.value == 20.0


# --- levenshtein ----------------------------------------------------------------------------


def test_near_copy_blocked_by_levenshtein_unrelated_passes() -> None:
    near = "Alice payd the invoce from her savingsaccount on Tusday after the quarterly reveiw meeting ended!"
    other_text = "Numbers are compared digit by digit, from the left, until two digits differ."
    guard = LeakageGuard([FILLER, RECORD], ngram=50)
    lesson = f"{other_text} {near} {other_text}"
    verdict = guard.check(lesson)
    check = result(verdict, "levenshtein")
    assert verdict.blocked_by == "levenshtein"
    expected = indel_distance(normalize(RECORD), normalize(lesson)) / len(normalize(RECORD))
    assert check.value == pytest.approx(expected)
    assert 0 < check.value < 0.3
    assert "private record #1" in check.detail
    other = result(LeakageGuard([RECORD]).check("Sort the words: zebra, apple, mango, kiwi."), "levenshtein")
    assert other.passed and other.value >= 0.3


def test_exact_copy_has_distance_zero() -> None:
    check = result(LeakageGuard([RECORD]).check(f"xx {RECORD.upper()} yy"), "levenshtein")
    assert check.value == 0.0 and not check.passed


def test_threshold_is_inclusive_and_empty_records_ignored() -> None:
    # "abcd" vs text "abxcd": one insertion -> 1/4 = 0.25; blocked below 0.25 only.
    assert result(LeakageGuard(["abcd", ""], min_edit_distance=0.25).check("abxcd"), "levenshtein").passed
    assert not result(LeakageGuard(["abcd"], min_edit_distance=0.26).check("abxcd"), "levenshtein").passed
    assert result(LeakageGuard(["", "   "]).check("anything"), "levenshtein").value == 1.0


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab c", max_size=40), st.text(alphabet="ab c", max_size=70))
def test_indel_matches_reference_dp(record: str, text: str) -> None:
    assert indel_distance(record, text) == reference_indel(record, text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(alphabet="abcz ", max_size=60), min_size=1, max_size=5),
    st.text(alphabet="abc ", max_size=80),
    st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 1.0]),
)
def test_prefilter_and_early_stop_never_change_the_verdict(records: list[str], text: str, threshold: float) -> None:
    check = result(LeakageGuard(records, min_edit_distance=threshold).check(text), "levenshtein")
    flat = normalize(text)
    truths = [indel_distance(r, flat) / len(r) for r in map(normalize, records) if r]
    truth = min(truths, default=1.0)
    assert check.passed == (truth >= threshold)
    assert check.value <= truth + 1e-12  # exact, or a lower bound ("at least")
    if not check.passed:
        assert check.value == truth


def test_skipped_records_report_a_lower_bound() -> None:
    # Character counts alone prove "zzzz..." is far from the text; a long unrelated record stops early.
    rng = random.Random(3)
    records = ["z" * 40, "".join(rng.choice("abcdefgh") for _ in range(200))]
    text = "".join(rng.choice("abcdefgh") for _ in range(300))
    check = result(LeakageGuard(records).check(text), "levenshtein")
    truth = min(indel_distance(r, text) / len(r) for r in records)
    assert check.passed and 0.3 <= check.value <= truth


def test_levenshtein_speed_1000_records() -> None:
    rng = random.Random(7)
    words = sorted(set(normalize(FILLER + RECORD).split()))
    records = [" ".join(rng.choice(words) for _ in range(40))[:150] for _ in range(1000)]
    lesson = " ".join(rng.choice(words) for _ in range(600))[:2000]
    guard = LeakageGuard(records)
    start = time.perf_counter()
    verdict = guard.check(lesson)
    assert time.perf_counter() - start < 5.0  # about 0.2 s on one core; generous for loaded CI
    assert verdict.passed


# --- PII ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "write to jane.doe+news@mail.example.co.uk today",
        "call +44 20 7946 0958",
        "call (555) 123-4567 now",
        "call 555-123-4567",
        "card 4111 1111 1111 1111",
        "card 4111111111111111",
        "ssn 123-45-6789",
    ],
)
def test_pii_blocked(text: str) -> None:
    verdict = LeakageGuard([RECORD], block_pii=True).check(text)
    assert verdict.blocked_by == "pii"
    assert result(verdict, "pii").value == 1.0


@pytest.mark.parametrize(
    "text", ["card 4111 1111 1111 1112", "number 4111111111111112", "2024-01-15 and 12:30", "total 1234567890"]
)
def test_pii_not_blocked(text: str) -> None:
    assert LeakageGuard([RECORD], block_pii=True).check(text).passed


def test_pii_counts_each_span_once() -> None:
    text = "a@b.io, 123-45-6789, +1 (555) 123-4567 and 5500 0000 0000 0004"
    check = result(LeakageGuard([RECORD], block_pii=True).check(text), "pii")
    assert check.value == 4.0
    for kind in ("e-mail address", "social security number", "phone number", "card number"):
        assert kind in check.detail


# --- messages, verdict, files ---------------------------------------------------------------


def test_reasons_never_quote_canary_or_private_text() -> None:
    secret = "Zorblax Quintavious transferred 9317 credits to Yggdrasil Holdings at dawn"
    guard = LeakageGuard([secret], ["Zorblax", "9317"], block_pii=True)
    texts = [secret, f"z o r b l a x and {secret.upper()}", "zorblax quintavious transfered 9317 credit to yggdrasil"]
    for text in texts:
        verdict = guard.check(text)
        assert not verdict.passed
        said = (verdict.reason + " ".join(c.detail for c in verdict.checks)).casefold()
        for word in ("zorblax", "quintavious", "9317", "credits", "yggdrasil", "holdings", "dawn"):
            assert word not in said


def test_verdict_order_and_reason() -> None:
    verdict = LeakageGuard([RECORD], [CANARY]).check(f"{RECORD} {CANARY}")
    assert [c.passed for c in verdict.checks] == [False, False, False]
    assert verdict.blocked_by == "canary"
    assert verdict.reason == (
        "the lesson contains 1 of 1 configured canaries: #0 (check canary; also failed: verbatim_ngram, levenshtein)."
    )


def test_concurrent_checks_agree() -> None:
    guard = LeakageGuard([RECORD, FILLER], [CANARY], block_pii=True)
    texts = [FILLER, RECORD, f"x {CANARY}", "a@b.io"] * 10
    expected = [guard.check(t) for t in texts]
    got: list[GuardVerdict | None] = [None] * len(texts)

    def work(k: int) -> None:
        got[k] = guard.check(texts[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


def test_bad_parameters_rejected() -> None:
    with pytest.raises(ValueError, match="ngram"):
        LeakageGuard([RECORD], ngram=0)
    with pytest.raises(ValueError, match="min_edit_distance"):
        LeakageGuard([RECORD], min_edit_distance=1.5)


def test_read_canaries(tmp_path: Path) -> None:
    path = tmp_path / "canaries.txt"
    path.write_text("# planted 2024\n4821\n\n  Marguerite  \n#not this\n", encoding="utf-8")
    assert LeakageGuard.read_canaries(path) == ["4821", "Marguerite"]


def test_read_canaries_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        LeakageGuard.read_canaries(missing)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        LeakageGuard.read_canaries(tmp_path)  # a directory
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\xfa" + string.ascii_letters.encode())
    with pytest.raises(ValueError, match=re.escape(str(binary))):
        LeakageGuard.read_canaries(binary)


# --- the public baseline: a task's public format and the recipient's own words leak nothing ---

TEMPLATE = "(1) This equation can be written as (A * B), where A = (%d + %d) and B = (%d - %d)."


def templated(*numbers: int) -> str:
    return TEMPLATE % numbers


def test_a_public_template_is_not_a_leak_but_a_copied_record_still_is() -> None:
    private = [templated(1, 2, 3, 4) + " (Final response) So the answer is -3."]
    public = [templated(5, 6, 7, 8), templated(9, 1, 2, 3)]
    lesson = templated(6, 2, 8, 5)  # same format, other numbers: what a scripted critique writes
    bare = LeakageGuard(private).check(lesson)
    assert not bare.passed  # without the baseline the format alone blocks
    guarded = LeakageGuard(private, public_texts=public)
    verdict = guarded.check(lesson)
    assert verdict.passed, verdict.reason
    copied = guarded.check("Sure: " + private[0])
    assert not copied.passed and copied.blocked_by in ("verbatim_ngram", "levenshtein")


def test_what_the_recipient_sent_does_not_count_but_what_the_teacher_adds_does() -> None:
    record = "the quiet harbor keeps seven blue boats tied to the northern pier at dawn"
    guard = LeakageGuard([record])
    prompt = "the quiet harbor keeps seven blue boats"  # the student's own 7 tokens
    echoed = guard.check(prompt + " and something else entirely different happens later", request=prompt)
    assert echoed.passed, echoed.reason
    continued = guard.check(prompt + " tied to the northern pier at dawn", request=prompt)
    assert not continued.passed and continued.blocked_by == "verbatim_ngram"


def test_lesson_parts_are_guarded_one_by_one_and_report_their_worst_values() -> None:
    from teacher.release import check_parts

    record = "one two three four five six seven eight nine ten"
    guard = LeakageGuard([record], min_edit_distance=0.2)
    joined = guard.check("the feedback ends with one two three four\nfive six seven eight is how it goes on")
    assert not joined.passed  # run together, the two parts spell a private 8-gram
    parts = check_parts(guard, ["the feedback ends with one two three four", "five six seven eight is how"], "")
    assert parts.passed, parts.reason
    assert result(parts, "verbatim_ngram").value == 4.0
    assert not check_parts(guard, ["fine", "x one two three four five six seven eight"], "").passed
