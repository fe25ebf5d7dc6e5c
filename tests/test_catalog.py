"""The catalog: required ids, lookups, and numbers that add up to the published parameter counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import catalog, memory

SHARED_CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "memory" / "configs"

REQUIRED = [
    "smollm2-135m-instruct",
    "smollm2-360m-instruct",
    "smollm2-1.7b-instruct",
    "llama-2-7b",
    "llama-2-13b",
    "llama-2-70b",
    "llama-3.2-1b-instruct",
    "llama-3.2-3b-instruct",
    "llama-3.1-8b-instruct",
    "llama-3.1-70b-instruct",
    "mistral-7b-instruct",
    "qwen2.5-0.5b-instruct",
    "qwen2.5-1.5b-instruct",
    "qwen2.5-3b-instruct",
    "qwen2.5-7b-instruct",
    "qwen2.5-14b-instruct",
    "qwen2.5-32b-instruct",
    "qwen2.5-72b-instruct",
    "gemma-2-2b",
    "gemma-2-9b",
    "gemma-3-1b",
    "phi-3-mini",
    "tinyllama-1.1b",
]

# Parameter counts printed by transformers for the real checkpoints (and by the calibration set's build_gt.py).
PUBLISHED_PARAMS = {
    "smollm2-135m-instruct": 134_515_008,
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-3.2-1b-instruct": 1_235_814_400,
    "llama-3.2-3b-instruct": 3_212_749_824,
    "llama-3.1-8b-instruct": 8_030_261_248,
    "llama-3.1-70b-instruct": 70_553_706_496,
    "mistral-7b": 7_241_732_096,
    "qwen2.5-0.5b-instruct": 494_032_768,
    "qwen2.5-7b-instruct": 7_615_616_512,
    "gemma-2-2b": 2_614_341_888,
    "gemma-2-9b": 9_241_705_984,
    "phi-3-mini": 3_821_079_552,
    "tinyllama-1.1b": 1_100_048_384,
}


def test_required_ids_are_present_and_unique():
    ids = catalog.ids()
    assert len(ids) == len(set(ids))
    missing = [i for i in REQUIRED if i not in ids]
    assert not missing


@pytest.mark.parametrize("cid", catalog.ids())
def test_every_entry_has_a_hub_id_and_builds_an_architecture(cid):
    facts = catalog.lookup(cid)
    assert facts is not None and facts.id == cid
    assert facts.hub_id.count("/") == 1
    arch = memory.architecture_from(cid)
    # the published size label is within 10% of the count from the config numbers
    assert arch.total_params == pytest.approx(facts.params_b * 1e9, rel=0.10)


def test_lookup_is_case_insensitive_and_knows_hub_ids():
    assert catalog.lookup("Llama-3.1-8B-Instruct").id == "llama-3.1-8b-instruct"
    assert catalog.lookup("meta-llama/Llama-3.1-8B-Instruct").id == "llama-3.1-8b-instruct"
    assert catalog.lookup("  qwen/qwen2.5-7b-instruct ").hub_id == "Qwen/Qwen2.5-7B-Instruct"
    assert catalog.lookup("no-such-model") is None
    assert catalog.lookup("") is None


@pytest.mark.parametrize(("cid", "params"), sorted(PUBLISHED_PARAMS.items()))
def test_parameter_counts_match_the_published_checkpoints(cid, params):
    assert memory.architecture_from(cid).total_params == params


def test_base_and_instruct_variants_share_numbers():
    assert catalog.lookup("llama-3.2-1b").config == catalog.lookup("llama-3.2-1b-instruct").config
    assert catalog.lookup("smollm2-135m").config == catalog.lookup("smollm2-135m-instruct").config


@pytest.mark.parametrize(
    ("cid", "slug"),
    [
        ("llama-2-7b", "llama-2-7b"),
        ("llama-2-13b", "llama-2-13b"),
        ("llama-3.2-1b", "llama-3.2-1b"),
        ("llama-3.2-3b", "llama-3.2-3b"),
        ("llama-3.1-8b", "llama-3.1-8b"),
        ("llama-3.3-70b-instruct", "llama-3.3-70b"),
        ("mistral-7b", "mistral-7b"),
        ("tinyllama-1.1b", "tinyllama-1.1b"),
        ("gemma-2-9b", "gemma-2-9b"),
        ("phi-1.5", "phi-1.5"),
    ],
)
def test_numbers_equal_the_shared_calibration_configs(cid, slug):
    path = SHARED_CONFIGS / slug / "config.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    shared = memory.architecture_from_config(json.loads(path.read_text()), slug)
    ours = memory.architecture_from(cid)
    assert (ours.total_params, ours.linears, ours.vocab, ours.tied) == (
        shared.total_params,
        shared.linears,
        shared.vocab,
        shared.tied,
    )
