"""Lessons that answer a student's own work: Demonstrate (TnD), Critique (TriPosT / YODA), Pose
(YODA) and Score.

For verifiable tasks, Critique, Pose and Score are scripted from the task: its verifier finds
the first wrong step and why, its improvement keeps the correct prefix and rewrites from there,
its generator builds variants and harder questions. None of that reads private data. Where the
task cannot check an answer by itself, the teacher's private examples decide, through PATE: the
candidates are public (the student's answer, and the one the teacher's model gives with no
private example in sight), every private shard votes for the candidate its own few-shot answer
agrees with, or abstains, and a noisy argmax picks the label.
"""

from __future__ import annotations

import re
from dataclasses import replace

import grpc

from node.llm.sampling import SamplingParams
from node.privacy.pate import tally
from node.rpc.agora.v1 import lesson_pb2, teacher_pb2
from node.tasks.base import ALL_CORRECT, Task, final_response
from teacher.age_predictor import age_text
from teacher.core import TeacherCore, shot
from teacher.release import Draft, Release, RequestError, invalid

_RETRIES_FOR_BANNED = 3


def _banned_pattern(words: list[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


async def demonstrate(core: TeacherCore, request: teacher_pb2.DemonstrateRequest, release: Release) -> Draft:
    s, teacher = request.sampling, core.settings.teacher
    params = SamplingParams(
        max_new_tokens=s.max_new_tokens or teacher.max_new_tokens,
        temperature=s.temperature,
        top_k=s.top_k,
        top_p=s.top_p if 0 < s.top_p < 1 else 1.0,
        stop=tuple(s.stop),
        seed=s.seed or None,
    )
    prompts = list(request.prompts)
    try:
        core.host.check_prompts(prompts, [params] * len(prompts))
    except ValueError as exc:
        raise invalid(str(exc)) from None
    texts = [g.text for g in await core.host.generate(prompts, params)]
    banned = _banned_pattern(list(request.banned_words))
    for attempt in range(_RETRIES_FOR_BANNED):  # TnD's banned-word ablation: resample, then cut
        rows = [i for i, text in enumerate(texts) if banned and banned.search(text)]
        if not rows:
            break
        retry = [replace(params, seed=(params.seed or 0) + attempt + 1) for _ in rows]
        again = await core.host.generate([prompts[i] for i in rows], retry)
        for i, generation in zip(rows, again, strict=True):
            texts[i] = generation.text
    if banned:
        texts = [text[: m.start()] if (m := banned.search(text)) else text for text in texts]
    demos = [lesson_pb2.Demonstration(prompt=p, continuation=t) for p, t in zip(prompts, texts, strict=True)]
    guarded = [p + t for p, t in zip(prompts, texts, strict=True)]
    body = lesson_pb2.DemonstrationSet(demonstrations=demos)
    return Draft(request.task, body, guarded, core.model_mechanism, known=prompts)


async def _public_answer(core: TeacherCore, task: Task, question: str) -> str:
    """The teacher model's own answer, with no private example in the prompt."""
    max_tokens = core.settings.teacher.max_new_tokens
    prompt = core.fit([], core.clip(task.prompt(question), max_tokens), max_tokens)
    text = (await core.host.generate([prompt], SamplingParams(max_new_tokens=max_tokens)))[0].text
    return (task.extract_answer(text) or text.strip().splitlines()[-1:] or [""])[0].strip()


async def _pate_labels(
    core: TeacherCore, task_name: str, questions: list[str], candidates: list[list[str]], release: Release
) -> list[int]:
    """For each question, the index of the candidate answer the private shards agree with (or
    len(candidates) for "none of them"), by one noisy argmax per question."""
    task = core.tasks[task_name]
    shards = core.shards(task_name)
    if not shards:
        raise RequestError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"task {task_name!r} has no verifier for these questions and this teacher holds no private examples of it",
        )
    release.charge(core.vote_charge(len(shards), queries=len(questions)))
    max_tokens = core.settings.teacher.max_new_tokens
    prompts = [
        core.fit([shot(r) for r in records], core.clip(f"Input: {q}\nOutput:", max_tokens), max_tokens)
        for q in questions
        for records in shards
    ]
    answers = await core.host.generate(prompts, SamplingParams(max_new_tokens=max_tokens, stop=("\n",)))
    labels = []
    for q_index, options in enumerate(candidates):
        votes = []
        for s_index in range(len(shards)):
            said = answers[q_index * len(shards) + s_index].text.strip()
            said = task.extract_answer(said) or said
            votes.append(options.index(said) if said in options else len(options))
        labels.append(core.vote.argmax(tally(votes, len(options) + 1), core.rng))
    return labels


async def critique(core: TeacherCore, request: teacher_pb2.CritiqueRequest, release: Release) -> Draft:
    task = core.tasks[request.task]
    parents = [request.previous_lesson_id] if request.previous_lesson_id else []
    example = task.solve(request.question)
    if example is not None:  # scripted from the task's verifier (TriPosT)
        verdict = task.verify(example, request.attempt)
        feedback = lesson_pb2.Feedback(
            correct=verdict.correct,
            first_wrong_step=0 if verdict.correct or verdict.line is None else verdict.line + 1,
            text=verdict.feedback,
            improved_answer="" if verdict.correct else task.improve(example, request.attempt, verdict),
        )
        # The gold rationale follows from the question by public code: the student knows it as well.
        texts, known = [feedback.text, feedback.improved_answer], [request.question, request.attempt, example.rationale]
        return Draft(request.task, feedback, texts, "none", parents=parents, known=known)
    # No verifier: the private shards judge the student's answer against the model's own.
    student = task.extract_answer(request.attempt) or request.attempt.strip().splitlines()[-1].strip()
    teacher_answer = await _public_answer(core, task, request.question)
    options = [student] + ([teacher_answer] if teacher_answer and teacher_answer != student else [])
    label = (await _pate_labels(core, request.task, [request.question], [options], release))[0]
    if label == 0:
        feedback = lesson_pb2.Feedback(correct=True, text=ALL_CORRECT)
    elif label < len(options):
        improved = final_response(teacher_answer)
        text = f'The final response "{student}" is incorrect. The answer should be {teacher_answer}.'
        feedback = lesson_pb2.Feedback(correct=False, text=text, improved_answer=improved)
    else:
        text = f'The final response "{student}" is incorrect.'
        feedback = lesson_pb2.Feedback(correct=False, text=text)
    mechanism = core.vote.mechanism
    parameters = dict(release.event.charge.parameters) if release.event else {}
    texts, known = [feedback.text, feedback.improved_answer], [request.question, request.attempt]
    return Draft(request.task, feedback, texts, mechanism, parameters, parents, known)


async def pose(core: TeacherCore, request: teacher_pb2.PoseRequest, release: Release) -> Draft:
    task = core.tasks[request.task]
    m, h = request.num_generalized, request.num_harder_levels
    posed = task.pose(request.question, m, h, seed=int(core.rng.integers(1 << 30)))
    mechanism = "none"
    if posed is None:  # written by the model from the question alone
        mechanism = core.model_mechanism
        max_tokens = core.settings.teacher.max_new_tokens
        asks = [("A similar question:", 0)] * m + [
            (f"A harder question (level {level}):", level) for level in range(1, h + 1)
        ]
        prompts = [
            core.fit([], core.clip(f"Question: {request.question}\n", max_tokens) + ask, max_tokens) for ask, _ in asks
        ]
        written = await core.host.generate(prompts, core.sampling(max_tokens, stop=("\n",)))
        posed = [(g.text.strip() or request.question, level) for g, (_, level) in zip(written, asks, strict=True)]
    tiers = {0: lesson_pb2.QUESTION_TIER_GENERALIZED}
    questions = [
        lesson_pb2.PosedQuestion(text=text, tier=tiers.get(level, lesson_pb2.QUESTION_TIER_HARDER), level=level)
        for text, level in posed
    ]
    body = lesson_pb2.QuestionSet(basic_question=request.question, questions=questions)
    return Draft(request.task, body, [q.text for q in questions], mechanism, known=[request.question])


async def score(core: TeacherCore, request: teacher_pb2.ScoreRequest, release: Release) -> list[float]:
    """Verifier scores: 1.0 when correct, else the fraction of gold steps before the first wrong one."""
    if request.kind == teacher_pb2.SCORE_KIND_AGE:  # R_phi saw only texts from the public corpus: no charge
        predictor = core.age_predictor
        if predictor is None:
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this teacher has no age predictor; the TnD age-predictor reward is not available from it",
            )
        texts = [age_text(item.question, item.text) for item in request.items]
        for index, text in enumerate(texts):
            length = predictor.token_count(text)
            if length > predictor.max_positions:
                raise invalid(
                    f"items[{index}] has {length} tokens, more than the age predictor's {predictor.max_positions}"
                )
        return await core.host.run(predictor.score, texts)
    if request.kind == teacher_pb2.SCORE_KIND_LIKELIHOOD:  # the public model's judgement: no charge
        items = list(request.items)
        for index, item in enumerate(items):
            length = core.token_count(item.question) + core.token_count(item.text)
            if length > core.host.max_positions:
                raise invalid(f"items[{index}] has {length} tokens, more than the model's {core.host.max_positions}")
        scored = await core.host.score([item.question for item in items], [item.text for item in items])
        return [s.mean for s in scored]
    task = core.tasks[request.task]
    scores: list[float | None] = []
    for item in request.items:
        example = task.solve(item.question)
        if example is None:
            scores.append(None)
            continue
        verdict = task.verify(example, item.text)
        steps = max(len(example.rationale.splitlines()), 1)
        scores.append(1.0 if verdict.correct else min((verdict.line or 0) / steps, 1.0))
    unscored = [i for i, value in enumerate(scores) if value is None]
    if unscored:  # PATE labels: is the text's answer the one the private shards agree with?
        items = [request.items[i] for i in unscored]
        answers = [task.extract_answer(item.text) or item.text.strip() for item in items]
        labels = await _pate_labels(
            core, request.task, [item.question for item in items], [[a] for a in answers], release
        )
        for i, label in zip(unscored, labels, strict=True):
            scores[i] = 1.0 if label == 0 else 0.0
    if release.event is not None:
        core.releaser.ledger.settle(release.event.seq, "released")
    return [value if value is not None else 0.0 for value in scores]
