"""The model host with real tiny transformers models: generation, batching, scoring, training, save/load."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.app import Node
from node.llm import (
    Generation,
    ModelHost,
    ModelLoadError,
    PlacementError,
    SamplingParams,
    TinySpec,
    TrainingExample,
    resolve_placement,
)
from node.llm.checkpoint import METADATA_FILE
from node.llm.placement import resolve_device, resolve_dtype
from node.llm.sft import sft_example
from node.llm.tokenizer import encode, train_tokenizer
from node.llm.training import IGNORE, encode_batch, weighted_lm_loss
from node.tasks import get_task
from tests.nodes import loopback_settings

SPEC = TinySpec(layers=2, dim=64, heads=4, max_positions=768)
TASK = get_task("arithmetic")


@pytest.fixture(scope="module")
def host() -> ModelHost:
    return ModelHost.build(TASK, SPEC, seed=1)


def _prompts(n: int, split: str = "seen") -> list[str]:
    return [TASK.prompt(e.question) for e in TASK.generate(split, n, seed=5)]  # type: ignore[arg-type]


def _logits(host: ModelHost, text: str) -> torch.Tensor:
    ids = torch.tensor([encode(host.tokenizer, text)])
    with torch.no_grad():
        logits: torch.Tensor = host.model(input_ids=ids).logits
    return logits


# -- save / load -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_save_load_round_trips_logits_exactly(family: str, tmp_path: Path) -> None:
    original = ModelHost.build(TASK, TinySpec(family, 2, 64, 4, 512), seed=3)  # type: ignore[arg-type]
    text = _prompts(1)[0]
    original.save(tmp_path / "model", note="hello")
    loaded = ModelHost.load(tmp_path / "model", resolve_placement("cpu", "float32"))
    assert torch.equal(_logits(original, text), _logits(loaded, text))
    assert encode(loaded.tokenizer, text) == encode(original.tokenizer, text)
    assert loaded.metadata.task == "arithmetic" and loaded.metadata.extra["note"] == "hello"
    assert loaded.model_id == "model" and loaded.tokenizer.padding_side == "left"


def test_save_replaces_atomically_and_a_failed_save_keeps_the_old_checkpoint(host: ModelHost, tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    host.save(target, version=1)
    host.save(target, version=2)  # replacing an existing checkpoint
    assert ModelHost.load(target).metadata.extra["version"] == 2

    broken = ModelHost.build(TASK, SPEC, seed=9)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    broken.tokenizer.save_pretrained = fail  # type: ignore[method-assign,assignment]  # the disk fills mid-save
    with pytest.raises(OSError, match="No space"):
        broken.save(target, version=3)
    assert ModelHost.load(target).metadata.extra["version"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary directories left


def test_a_crash_between_renames_is_recovered_on_load(host: ModelHost, tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    host.save(target, version=1)
    target.rename(tmp_path / ".ckpt.old-deadbeef")  # the state a crash mid-replace leaves behind
    assert ModelHost.load(target).metadata.extra["version"] == 1
    assert (target / METADATA_FILE).is_file()


def test_missing_models_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelLoadError, match=re.escape(f"no model directory at {tmp_path / 'nope'}")):
        ModelHost.load(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        ModelHost.load(tmp_path / "empty")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"hub id 'agora-test/no-such-model' \(HF_HUB_OFFLINE=1"):
        ModelHost.load("agora-test/no-such-model")


def test_placement() -> None:
    assert resolve_placement("cpu", "auto").dtype == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(PlacementError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        assert resolve_placement("cuda", "auto").dtype in (torch.bfloat16, torch.float16)
    else:
        with pytest.raises(PlacementError, match="no CUDA GPU"):
            resolve_device("cuda:0")
        assert resolve_placement().device.type in ("cpu", "mps")


# -- tokenizers ----------------------------------------------------------------------------------


def test_char_tokenizer_round_trips_task_text_and_maps_unknown_symbols() -> None:
    corpus = TASK.corpus(seed=0, n_per_split=20)
    tokenizer = train_tokenizer(corpus, "char")
    for text in corpus[:20]:
        assert tokenizer.decode(encode(tokenizer, text, add_bos=False)) == text
    assert encode(tokenizer, "é", add_bos=False) == [tokenizer.unk_token_id]
    assert encode(tokenizer, "1")[0] == tokenizer.bos_token_id


def test_word_tokenizer_splits_on_whitespace() -> None:
    tokenizer = train_tokenizer(["the dog runs .", "a cat sleeps ."], "word")
    ids = encode(tokenizer, "the cat runs .", add_bos=False)
    assert len(ids) == 4 and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == "the cat runs ."
    assert tokenizer.unk_token_id in encode(tokenizer, "the zebra", add_bos=False)


# -- generation ----------------------------------------------------------------------------------


def test_sixteen_concurrent_greedy_requests_match_sixteen_sequential_ones(host: ModelHost) -> None:
    prompts = _prompts(16)
    params = SamplingParams(max_new_tokens=24)
    sequential = [host.generate_sync([prompt], [params])[0] for prompt in prompts]

    async def concurrently() -> list[list[Generation]]:
        return await asyncio.gather(*(host.generate([prompt], params) for prompt in prompts))

    before = host.batcher.batches_run
    concurrent = [result[0] for result in asyncio.run(concurrently())]
    assert [g.text for g in concurrent] == [g.text for g in sequential]
    assert [g.token_ids for g in concurrent] == [g.token_ids for g in sequential]
    assert host.batcher.batches_run - before < 16  # they were batched, not run one by one


def test_per_row_sampling_is_independent_of_the_batch(host: ModelHost) -> None:
    prompts = _prompts(3)
    sampled = SamplingParams(max_new_tokens=20, temperature=1.0, top_k=10, top_p=0.9, seed=7)
    alone = host.generate_sync([prompts[0]], [sampled])[0]
    mixed = host.generate_sync(prompts, [sampled, SamplingParams(max_new_tokens=5), SamplingParams(seed=1)])
    assert mixed[0] == alone
    assert len(mixed[1].token_ids) <= 5
    reseeded = host.generate_sync([prompts[0]] * 4, [SamplingParams(20, 1.0, seed=s) for s in range(4)])
    assert len({g.token_ids for g in reseeded}) > 1  # different seeds, different samples


def test_top_k_one_is_greedy_and_limits_are_reported(host: ModelHost) -> None:
    prompt = _prompts(1)[0]
    greedy = host.generate_sync([prompt], [SamplingParams(max_new_tokens=12)])[0]
    top1 = host.generate_sync([prompt], [SamplingParams(max_new_tokens=12, temperature=5.0, top_k=1, seed=3)])[0]
    assert top1.token_ids == greedy.token_ids
    assert greedy.finish_reason in ("length", "eos")
    if greedy.finish_reason == "length":
        assert len(greedy.token_ids) == 12
    assert greedy.prompt_tokens == len(encode(host.tokenizer, prompt))


def test_stop_strings_end_generation_and_are_cut(host: ModelHost) -> None:
    prompt = _prompts(1)[0]
    free = host.generate_sync([prompt], [SamplingParams(max_new_tokens=30)])[0]
    if len(free.text) < 4:
        pytest.fail(f"the tiny model stopped too early to test stop strings: {free.text!r}")
    stop = free.text[2:4]
    stopped = host.generate_sync([prompt], [SamplingParams(max_new_tokens=30, stop=(stop,))])[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.find(stop)]


def test_bad_sampling_params_and_oversize_prompts_are_refused(host: ModelHost) -> None:
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError, match="exceeds the model's context of 768 tokens"):
        asyncio.run(host.generate(["1" * 760], SamplingParams(max_new_tokens=20)))


class HeldHost(ModelHost):
    """Fault injection: generation keeps the model busy until the test releases it."""

    release = threading.Event()
    running = threading.Event()

    def generate_sync(self, prompts: Sequence[str], params: Sequence[SamplingParams]) -> list[Generation]:
        self.running.set()
        results = super().generate_sync(prompts, params)
        while not self.release.wait(0.01):
            results = super().generate_sync(prompts, params)
        return results


def test_health_checks_are_served_while_the_model_generates() -> None:
    host = HeldHost.build(TASK, SPEC)

    async def scenario() -> list[int]:
        node = Node(loopback_settings())
        addresses = await node.start()
        try:
            generation = asyncio.ensure_future(host.generate(_prompts(4), SamplingParams(max_new_tokens=16)))
            assert await asyncio.to_thread(host.running.wait, 30)
            statuses = []
            async with aio.insecure_channel(addresses.grpc) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for _ in range(5):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    assert not generation.done()
                    statuses.append(reply.status)
            host.release.set()
            assert len(await asyncio.wait_for(generation, 60)) == 4
            return statuses
        finally:
            host.release.set()
            await node.stop()

    assert asyncio.run(scenario()) == [health_pb2.HealthCheckResponse.SERVING] * 5


# -- scoring -------------------------------------------------------------------------------------


def test_score_matches_the_model_log_probabilities(host: ModelHost) -> None:
    context, continuation = "Q: (1 + 2) =\nAnswer: ", "(Final response) So the answer is 3."
    [score] = host.score_sync([context], [continuation])
    head, tail = encode(host.tokenizer, context), encode(host.tokenizer, continuation, add_bos=False)
    logits = _logits(host, context + continuation)  # the char tokenizer splits both ways the same
    expected = torch.log_softmax(logits[0, len(head) - 1 : -1], -1).gather(-1, torch.tensor(tail)[:, None]).squeeze(-1)
    assert len(score.logprobs) == len(tail) and "".join(score.tokens) == continuation
    assert torch.allclose(torch.tensor(score.logprobs), expected, atol=1e-5)
    assert score.total < 0 and score.perplexity > 1


def test_batched_scores_equal_single_scores(host: ModelHost) -> None:
    contexts = ["Q: 1 =\nAnswer: ", "Q: ((2 * 3) - 4) =\nAnswer: ", ""]
    continuations = ["1", "(Final response) So the answer is 2.", "abc"]
    batched = host.score_sync(contexts, continuations)
    single = [host.score_sync([c], [t])[0] for c, t in zip(contexts, continuations, strict=True)]
    for a, b in zip(batched, single, strict=True):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)


# -- training ------------------------------------------------------------------------------------


def test_training_lowers_held_out_loss() -> None:
    host = ModelHost.build(TASK, SPEC, seed=2)
    train = [sft_example(TASK, e) for e in TASK.generate("train", 128, seed=0)]
    held_out = [sft_example(TASK, e) for e in TASK.generate("seen", 32, seed=0)]
    before = host.eval_loss(held_out)
    optimizer = host.make_optimizer(lr=3e-3)
    for step in range(40):
        host.train_step(train[(step * 16) % 128 :][:16], optimizer)
    after = host.eval_loss(held_out)
    assert after < before * 0.6, (before, after)
    assert host.metadata.train_steps == 40


def test_only_target_tokens_are_learned_and_weights_scale_the_loss(host: ModelHost) -> None:
    plain = TrainingExample("Q: 1 =\nAnswer: ", [("(1) x\n", 1.0), ("Feedback: y", 1.0)])
    heavy = TrainingExample("Q: 1 =\nAnswer: ", [("(1) x\n", 1.0), ("Feedback: y", 1.5)])
    batch = encode_batch(host.tokenizer, [plain, heavy], 512, host.device)
    prompt_length = len(encode(host.tokenizer, plain.prompt))
    assert (batch.labels[:, :prompt_length] == IGNORE).all()
    assert batch.target_tokens == 2 * (len("(1) x\nFeedback: y") + 1)  # + EOS
    assert batch.weights[1].max() == 1.5 and (batch.weights[0][batch.labels[0] != IGNORE] == 1.0).all()
    logits = torch.randn(1, batch.input_ids.size(1), len(host.tokenizer))
    base = weighted_lm_loss(logits, batch.labels[:1], batch.weights[:1])
    doubled = weighted_lm_loss(logits, batch.labels[:1], batch.weights[:1] * 2)
    assert torch.allclose(doubled, base * 2)


def test_a_plain_hugging_face_directory_loads_with_default_metadata(host: ModelHost, tmp_path: Path) -> None:
    plain = tmp_path / "hf-model"
    host.model.save_pretrained(plain)
    host.tokenizer.save_pretrained(plain)
    loaded = ModelHost.load(plain, resolve_placement("cpu", "float32"))
    assert loaded.metadata.task is None and loaded.model_id == "hf-model"
    text = _prompts(1)[0]
    assert torch.equal(_logits(loaded, text), _logits(host, text))


def test_model_settings_build_or_load_the_model(host: ModelHost, tmp_path: Path) -> None:
    tiny = loopback_settings(model={"layers": 1, "dim": 32, "heads": 2, "max_batch_size": 4, "batch_window_ms": 1})
    built = ModelHost.from_settings(tiny.model, TASK)
    assert built.model_id == "tiny" and built.model.config.num_hidden_layers == 1
    assert built.batcher.max_batch_size == 4 and built.batcher.window_s == 0.001
    host.save(tmp_path / "saved")
    from_dir = loopback_settings(model={"source": str(tmp_path / "saved"), "device": "cpu"})
    loaded = ModelHost.from_settings(from_dir.model, TASK)
    assert loaded.model_id == "saved" and loaded.parameter_count == host.parameter_count
