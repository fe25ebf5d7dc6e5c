"""bench.ceiling counts the model FLOPs each side of the default benchmark pays for: TuneDesk's batches as the CPU
chunks it trains (each padded to its own longest row), the plain script's random batches padded to their longest,
with logits everywhere. Synthetic row lengths and the default model's shape: no model, no data file."""

from __future__ import annotations

import pytest

from app import accel, batching
from bench import ceiling, common

DIMS = common.Dims(layers=30, hidden=576, heads=9, kv_heads=3, head_dim=64, intermediate=1536, vocab=49152)


def _rows(n: int = 40) -> list[tuple[int, int]]:
    lengths = [30 + (k * 97) % 480 for k in range(n)]  # 30..509 tokens, spread out
    return [(length, length // 2) for length in lengths]


def _floor(rows):
    return common.lora_train_flops(DIMS, sum(n for n, _ in rows), sum(k for _, k in rows),
                                   sum(n * n for n, _ in rows))["total"]  # fmt: skip


def test_tunedesk_chunks_are_its_epoch_order_cut_by_the_chunk_rule():
    rows = _rows()
    chunks = ceiling.tunedesk_batches(rows, accel.CPU_CHUNK_TOKENS)
    order = batching.epoch_order([n for n, _ in rows], ceiling.BATCH, ceiling.SEED, 0, group=True)
    assert [r for chunk in chunks for r in chunk] == [rows[j] for j in order]  # every row once, in its order
    for chunk in chunks:
        assert len(chunk) == 1 or len(chunk) * max(n for n, _ in chunk) <= accel.CPU_CHUNK_TOKENS
    assert len(chunks) > len(rows) / ceiling.BATCH  # some batches of these lengths are split
    assert len(ceiling.tunedesk_batches(rows, 0)) == len(rows) // ceiling.BATCH


def test_padding_and_full_logits_cost_flops_and_the_floor_is_the_least():
    rows = _rows()
    floor = _floor(rows)
    assert ceiling.batch_flops(DIMS, [[r] for r in rows], labels_only=True) == pytest.approx(floor, rel=1e-9)
    chunks = ceiling.batch_flops(DIMS, ceiling.tunedesk_batches(rows, accel.CPU_CHUNK_TOKENS), labels_only=True)
    whole = ceiling.batch_flops(DIMS, ceiling.tunedesk_batches(rows, 0), labels_only=True)
    plain = ceiling.batch_flops(DIMS, ceiling.random_batches(rows, 0), labels_only=False)
    plain_labels_only = ceiling.batch_flops(DIMS, ceiling.random_batches(rows, 0), labels_only=True)
    assert floor < chunks <= whole < plain_labels_only < plain
