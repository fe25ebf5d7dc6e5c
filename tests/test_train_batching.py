"""Batching: packing without cross-contamination, length grouping, and the loss computed only at label positions."""

from __future__ import annotations

import random

import pytest
import torch

from app.batching import IGNORE, Collator, RowDataset, TokenStore, epoch_order, pack


def test_pack_covers_every_example_once_within_capacity():
    rng = random.Random(1)
    lengths = [rng.randint(5, 120) for _ in range(500)]
    rows = pack(lengths, 128)
    flat = sorted(i for row in rows for i in row)
    assert flat == list(range(500))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    # best-fit decreasing is within a few percent of the lower bound ceil(sum / capacity)
    assert len(rows) <= 1.05 * (sum(lengths) / 128) + 1


def test_epoch_order_is_reproducible_and_groups_lengths():
    rng = random.Random(2)
    lengths = [rng.randint(10, 500) for _ in range(400)]
    a = epoch_order(lengths, 4, seed=7, epoch=0, group=True)
    assert a == epoch_order(lengths, 4, seed=7, epoch=0, group=True)  # a resume replays the same batches
    assert a != epoch_order(lengths, 4, seed=7, epoch=1, group=True)
    assert sorted(a) == list(range(400))

    def padding(order):
        batches = [order[k : k + 4] for k in range(0, len(order), 4)]
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(a) < 0.2 * padding(epoch_order(lengths, 4, seed=7, epoch=0, group=False))
    first = a[:4]
    assert max(lengths[i] for i in first) == max(lengths)  # longest batch first: OOM shows at step 1


def test_token_store_keeps_examples_and_counts_shifted_labels():
    store = TokenStore.from_examples([([1, 2, 3], [IGNORE, 2, 3]), ([4, 5], [4, 5])])
    assert store.ids_of(0).tolist() == [1, 2, 3] and store.labels_of(1).tolist() == [4, 5]
    assert store.label_count() == 3  # the first token of an example is never a target


def test_packed_collation_restarts_positions_and_hides_boundaries():
    store = TokenStore.from_examples([([1, 2, 3], [1, 2, 3]), ([4, 5], [4, 5]), ([6, 7, 8, 9], [IGNORE, 7, 8, 9])])
    batch = Collator(store, pad_id=0, packed=True)([[0, 1], [2]])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    # train_on_prompt labels: the first token of each packed example is not a target of the one before it
    assert batch["labels"].tolist() == [[IGNORE, 2, 3, IGNORE, 5], [IGNORE, 7, 8, 9, IGNORE]]
    assert "attention_mask" not in batch and batch["num_tokens"] == 9
    plain = Collator(store, pad_id=0, packed=False)([[1], [2]])
    assert plain["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval()


def _examples(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(5, 40, (1,), generator=gen))
        ids = torch.randint(3, 500, (length,), generator=gen).tolist()
        cut = length // 3
        out.append((ids, [IGNORE] * cut + ids[cut:]))
    return out


def test_packed_row_logits_equal_each_example_alone(tiny):
    examples = _examples(4)
    store = TokenStore.from_examples(examples)
    batch = Collator(store, pad_id=0, packed=True)([[0, 1, 2, 3]])
    with torch.no_grad():
        packed = tiny(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        at = 0
        for ids, _ in examples:
            alone = tiny(input_ids=torch.tensor([ids]), use_cache=False).logits
            torch.testing.assert_close(packed[:, at : at + len(ids)], alone, atol=1e-4, rtol=0)
            at += len(ids)


@pytest.mark.parametrize("packed", [False, True])
def test_label_only_loss_equals_the_models_own_loss(tiny, packed):
    from app.objectives import LabelGather, label_loss

    examples = _examples(6, seed=3)
    store = TokenStore.from_examples(examples)
    data = RowDataset.build(store, packing=packed, max_len=64)
    batch = Collator(store, pad_id=0, packed=packed)([data[i] for i in range(len(data))])
    gather = LabelGather(tiny)
    try:
        with torch.no_grad():
            ours, count = label_loss(tiny, batch, gather)
            inputs = {k: v for k, v in batch.items() if k not in ("num_tokens", "row_tokens")}
            reference = tiny(**inputs, use_cache=False).loss
            plain_logits = tiny(input_ids=batch["input_ids"][:1], use_cache=False).logits
    finally:
        gather.remove()
    assert count == store.label_count()
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert plain_logits.shape[1] == batch["input_ids"].shape[1]  # outside label_loss the hook changes nothing


def test_right_padding_trains_without_the_padding_mask_to_the_same_loss_and_gradients(tiny, monkeypatch):
    from app import objectives
    from app.objectives import LabelGather, label_loss

    store = TokenStore.from_examples(_examples(4, seed=5))
    batch = Collator(store, pad_id=0, packed=False)([[i] for i in range(4)])
    assert not batch["attention_mask"].all()  # rows of different lengths: there is padding to leave unmasked
    seen = []
    hook = tiny.register_forward_pre_hook(lambda m, a, kw: seen.append("attention_mask" in kw), with_kwargs=True)
    results = {}
    for kind in ("without", "with"):
        if kind == "with":
            monkeypatch.setattr(objectives, "padding_mask_is_redundant", lambda model, inputs: False)
        gather = LabelGather(tiny)
        tiny.zero_grad()
        try:
            loss, _ = label_loss(tiny, batch, gather)
            loss.backward()
        finally:
            gather.remove()
        grads = {n: p.grad.clone() for n, p in tiny.named_parameters() if p.grad is not None}
        results[kind] = (float(loss), grads)
    hook.remove()
    assert seen == [False, True]  # the first forward went without the mask, the second with it
    assert results["without"][0] == pytest.approx(results["with"][0], rel=1e-5)
    for name, grad in results["with"][1].items():
        torch.testing.assert_close(results["without"][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    tiny.zero_grad(set_to_none=True)


def test_the_padding_mask_is_kept_where_it_is_not_only_right_padding(tiny):
    from app.objectives import padding_mask_is_redundant

    right = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert padding_mask_is_redundant(tiny, {"input_ids": right, "attention_mask": right})
    left = torch.tensor([[1, 1, 1], [0, 1, 1]])
    assert not padding_mask_is_redundant(tiny, {"input_ids": left, "attention_mask": left})
    holes = torch.tensor([[1, 0, 1]])
    assert not padding_mask_is_redundant(tiny, {"input_ids": holes, "attention_mask": holes})
    packed = {"input_ids": right, "attention_mask": right, "position_ids": torch.tensor([[0, 1, 0], [0, 1, 2]])}
    assert not padding_mask_is_redundant(tiny, packed)
    assert not padding_mask_is_redundant(tiny, {"input_ids": right})
    impl = tiny.config._attn_implementation
    try:
        tiny.config._attn_implementation = "flash_attention_2"  # its varlen path skips the padding by the mask
        assert not padding_mask_is_redundant(tiny, {"input_ids": right, "attention_mask": right})
    finally:
        tiny.config._attn_implementation = impl
