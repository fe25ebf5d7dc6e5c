"""A CPU micro-batch trains in chunks of rows (app.accel.row_splits): the same gradient and losses as the whole batch,
each chunk cropped to its own longest row, and the estimate holds one chunk's activations (tests/test_memory.py)."""

from __future__ import annotations

import threading

import pytest
import torch
from test_train_kit import events_of, one_torch_thread, tiny_config, write_alpaca  # noqa: F401

from app import accel, runs, train
from app.batching import IGNORE, NOT_MODEL_INPUTS, Collator, TokenStore, split_batch
from app.train import Dist


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_alpaca(tmp_path_factory.mktemp("data") / "alpaca.json", n=24)


def _store(lengths: list[int]) -> TokenStore:
    examples = []
    for n, length in enumerate(lengths):
        ids = [10 + n * 100 + k for k in range(length)]
        examples.append((ids, [IGNORE] * (length // 2) + ids[length // 2 :]))
    return TokenStore.from_examples(examples)


@pytest.mark.parametrize("packed", [False, True])
def test_split_batch_keeps_every_token_once_and_crops_each_chunk_to_its_rows(packed):
    store = _store([9, 7, 4, 3, 8])
    rows = [[0], [1], [2], [3]] if not packed else [[0, 2], [1, 3], [4]]
    batch = Collator(store, pad_id=0, packed=packed)(rows)
    width = batch["input_ids"].shape[1]
    chunks = split_batch(batch, budget=2 * width)
    assert [c["input_ids"].shape[0] for c in chunks] == accel.row_splits(len(rows), width, 2 * width)
    assert len(chunks) > 1
    assert sum(c["num_tokens"] for c in chunks) == batch["num_tokens"]
    assert torch.cat([c["row_tokens"] for c in chunks]).tolist() == batch["row_tokens"].tolist()
    at = 0
    for chunk in chunks:
        real = chunk["row_tokens"]
        assert chunk["input_ids"].shape[1] == int(real.max())  # padded to its own longest row only
        assert set(chunk) == set(batch)
        for k in ("input_ids", "labels", "attention_mask", "position_ids"):
            if k in batch:
                part = batch[k][at : at + len(real), : chunk[k].shape[1]]
                assert torch.equal(chunk[k], part), k
                cropped = batch[k][at : at + len(real), chunk[k].shape[1] :]
                if k != "position_ids":  # what was cropped is padding only
                    assert (cropped == (IGNORE if k == "labels" else 0)).all(), k
        at += len(real)
    assert split_batch(batch, budget=0) == [batch] and split_batch(batch, budget=10**6) == [batch]


def _session(tiny_model_dir, data_file, chunk_tokens: int):
    cfg = tiny_config(tiny_model_dir, data_file, **{"data.val_size": 0, "train.learn_check": 0, "train.batch_size": 4})
    session = train.build(cfg, runs.create_run(cfg), threading.Event(), "cpu", Dist())
    session.trainer.chunk_tokens = chunk_tokens
    return session


def test_a_chunked_step_has_the_whole_batchs_loss_and_gradient(tiny_model_dir, data_file, runs_tmp):
    grads, losses = {}, {}
    for chunk_tokens in (0, 1):  # 1: every row is a chunk of its own
        torch.manual_seed(0)
        session = _session(tiny_model_dir, data_file, chunk_tokens)
        trainer = session.trainer
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        assert len(split_batch(batch, chunk_tokens)) == (4 if chunk_tokens else 1)
        items = int((batch["labels"][:, 1:] != IGNORE).sum())
        model = trainer.model
        model.zero_grad()
        losses[chunk_tokens] = float(trainer.training_step(model, batch, torch.tensor(items)))
        grads[chunk_tokens] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        assert trainer.tokens_seen == batch["num_tokens"]  # counted once per real token, chunks or not
        session.gather.remove()
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert grads[1].keys() == grads[0].keys() and grads[0]
    for name, whole in grads[0].items():
        torch.testing.assert_close(grads[1][name], whole, rtol=1e-4, atol=1e-6, msg=name)


def _losses(cfg) -> list[float]:
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished", events_of(run_dir, "failed")
    return [e["loss"] for e in events_of(run_dir, "log")]


def test_training_in_chunks_logs_the_losses_of_training_whole_batches(
    tiny_model_dir, data_file, runs_tmp, monkeypatch
):
    cfg = tiny_config(tiny_model_dir, data_file, **{"data.val_size": 0, "train.learn_check": 0, "train.save_steps": 0,
                                                    "train.batch_size": 4, "train.max_steps": 3})  # fmt: skip
    monkeypatch.setattr(accel, "CPU_CHUNK_TOKENS", 0)
    whole = _losses(cfg)
    monkeypatch.setattr(accel, "CPU_CHUNK_TOKENS", 1)  # every row its own forward and backward
    chunked = _losses(cfg)
    assert len(whole) == 3
    assert chunked == pytest.approx(whole, rel=1e-4)


def test_model_inputs_leave_out_the_bookkeeping():
    batch = Collator(_store([5, 3]), pad_id=0, packed=False)([[0], [1]])
    assert {"num_tokens", "row_tokens", "labels"} <= set(batch) and set(NOT_MODEL_INPUTS) <= set(batch)
