"""Training objectives: what the trainer optimises, as a small registry: supervised fine-tuning (sft) and preference
training (dpo, orpo, simpo, kto) with TRL's trainers.

Supervised fine-tuning is two functions the trainer (app/train.py -> app.trainer.TuneTrainer) calls:

* `prepare(cfg, tokenizer) -> Prepared`: the data as training rows (token stores, a collator, facts for the log);
* `loss(model, batch, gather, num_items) -> (loss, label count)`: one micro-batch's loss.

It tokenizes records with app.data (labels -100 on the prompt) and takes the cross-entropy at label positions only,
computing logits for those rows alone (LabelGather). A preference objective is an entry whose `trl` names the TRL
trainer and config classes that own its loss (app.preference_train builds them); its `prepare` is
app.preference_data.prepare (pairs, or labelled single answers for KTO) and `settings(cfg)` the objective's own
config fields (beta, loss variant, reference policy).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from app import modeling, objective_table
from app.batching import IGNORE, NOT_MODEL_INPUTS, Collator, RowDataset, TokenStore
from app.config import RunConfig


class ObjectiveError(RuntimeError):
    """The data or model cannot be trained with this objective; the message says what to fix."""


# ---- supervised fine-tuning: loss only where there are labels --------------------------------------------------
class LabelGather:
    """A forward pre-hook on the output layer that keeps only the rows selected by `mask` (B x T bool).

    The model's own forward then computes logits for those N rows only ([1, N, vocab]); outside `only()` the
    hook does nothing (generation, plain forwards). Works through PEFT and DDP wrappers, since the forward still
    goes through them and the hook sits on the module object itself.
    """

    def __init__(self, model: Any):
        head = modeling.base_model(model).get_output_embeddings()
        if head is None:
            raise ObjectiveError(
                f"{type(modeling.base_model(model)).__name__} has no output layer to compute a loss on"
            )
        self.mask: torch.Tensor | None = None
        self.handle = head.register_forward_pre_hook(self._hook)

    def _hook(self, module: Any, args: tuple) -> tuple | None:
        if self.mask is None or not args:
            return None
        return (args[0][self.mask].unsqueeze(0), *args[1:])

    @contextlib.contextmanager
    def only(self, mask: torch.Tensor):
        self.mask = mask
        try:
            yield
        finally:
            self.mask = None

    def remove(self) -> None:
        self.handle.remove()


def padding_mask_is_redundant(model: Any, inputs: dict[str, Any]) -> bool:
    """True when the batch's attention mask only marks right padding, so the forward can go without it.

    Under a causal mask a real token attends to itself and earlier positions only, and right padding comes after
    every real token of its row, so no real position ever sees a pad: its values, and with them the loss and the
    gradients, are the same with the padding mask or without it. Without it the model runs its causal path (SDPA's
    is_causal), which skips the attention blocks above the diagonal instead of computing and masking them: 1.08x
    a 2 x 400 chunk's forward and backward on the CPU (BENCHMARKS.md, "Kernel-level changes"). Kept for left padding,
    packed rows (position_ids), and FlashAttention-2, whose varlen path uses the mask to skip the padding itself."""
    mask = inputs.get("attention_mask")
    if mask is None or "position_ids" in inputs or mask.dim() != 2:
        return False
    config = getattr(modeling.base_model(model), "config", None)
    if getattr(config, "_attn_implementation", None) == "flash_attention_2":
        return False
    return bool((mask[:, 1:] <= mask[:, :-1]).all() and mask[:, 0].all())


def label_loss(model: Any, batch: dict[str, Any], gather: LabelGather, num_items: Any = None) -> tuple[Any, int]:
    """(loss, label count): summed cross-entropy over positions whose next-token label is not -100, divided by
    `num_items` (the label count of the whole accumulated batch, from the Trainer) or by its own label count.
    Equals the model's own causal-LM loss, without ever making batch x seq x vocab logits."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k not in NOT_MODEL_INPUTS}
    if padding_mask_is_redundant(model, inputs):
        del inputs["attention_mask"]
    keep = labels[:, 1:] != IGNORE
    targets = labels[:, 1:][keep]
    with gather.only(F.pad(keep, (0, 1), value=False)):
        logits = model(**inputs, use_cache=False).logits
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="sum")
    count = targets.numel()
    return total / (num_items if num_items is not None else max(count, 1)), count


# ---- supervised fine-tuning: the data ------------------------------------------------------------------------------
@dataclass
class Prepared:
    train: RowDataset
    val: RowDataset | None
    collator: Collator
    facts: dict
    eval_collator: Collator | None = None


def prepare_data(cfg: RunConfig, tokenizer: Any) -> Prepared:
    """Tokenize with app.data (the same encoding as the Data tab preview) into compact token stores."""
    from app import data as data_mod

    prepared = data_mod.prepare(cfg.data, tokenizer, seed=cfg.train.seed)
    if not prepared.train:
        raise ObjectiveError(
            f"{cfg.data.path}: no usable training examples after validation; open the Data tab to see "
            "which records were rejected and why"
        )
    train_store = TokenStore.from_examples(prepared.train)
    val_store = TokenStore.from_examples(prepared.val) if prepared.val else None
    stats = prepared.stats
    facts = {
        "train_examples": len(train_store),
        "val_examples": len(val_store) if val_store else 0,
        "skipped_records": stats.skipped,
        "truncated": stats.truncated,
        "tokens_per_epoch": stats.tokens_per_epoch,
        "label_tokens_per_epoch": train_store.label_count(),
        "template": prepared.template,
    }
    del prepared  # the token stores hold everything training needs, in ~1/4 of the memory
    packing, max_len = cfg.train.packing, cfg.data.max_seq_len
    train = RowDataset.build(train_store, packing, max_len)
    val = RowDataset.build(val_store, packing, max_len, sort=True) if val_store and len(val_store) else None
    facts["train_rows"] = len(train)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Eval rows index the val store: they need a collator over that store, not the train one.
    eval_collator = Collator(val_store, pad, packing) if val is not None else None
    return Prepared(train, val, Collator(train_store, pad, packing), facts, eval_collator)


# ---- preference objectives: TRL's trainers and their settings ---------------------------------------------------
def prepare_preference(cfg: RunConfig, tokenizer: Any) -> Any:
    """app.preference_data.prepare: TRL-format datasets (pairs, or labelled answers for KTO) and facts for the log."""
    from app import preference_data

    return preference_data.prepare(cfg, tokenizer)


def beta_of(cfg: RunConfig) -> float:
    """preference.beta, or the objective's usual value when it is empty."""
    beta = cfg.preference.beta
    return beta if beta is not None else objective_table.of(cfg).beta


def _precompute(cfg: RunConfig) -> dict:
    return {"precompute_ref_log_probs": cfg.preference.reference == "precompute"}


def dpo_settings(cfg: RunConfig) -> dict:
    return {"beta": beta_of(cfg), "loss_type": [cfg.preference.loss_type], **_precompute(cfg)}


def kto_settings(cfg: RunConfig) -> dict:
    pref = cfg.preference
    weights = {"desirable_weight": pref.desirable_weight, "undesirable_weight": pref.undesirable_weight}
    return {"beta": beta_of(cfg), **weights, **_precompute(cfg)}


def orpo_settings(cfg: RunConfig) -> dict:
    return {"beta": beta_of(cfg)}  # ORPO's beta is the odds-ratio weight (lambda in the paper)


def simpo_settings(cfg: RunConfig) -> dict:
    """SimPO is TRL's CPO trainer with loss_type simpo and no behaviour-cloning term (cpo_alpha 0). TRL's
    simpo_gamma is the margin in reward units; preference.simpo_gamma is it as a share of beta (the SimPO paper's
    gamma/beta ratio), so 0.5 at beta 2.0 is a margin of 1.0."""
    beta = beta_of(cfg)
    return {"beta": beta, "loss_type": "simpo", "simpo_gamma": cfg.preference.simpo_gamma * beta, "cpo_alpha": 0.0}


# ---- the registry ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Objective:
    name: str
    description: str
    prepare: Callable[[RunConfig, Any], Any]
    """(config, tokenizer) -> the training and validation data and facts for the log (Prepared for sft,
    app.preference_data.PreferencePrepared for a preference objective)."""
    loss: Callable[..., tuple[Any, int]] | None = None
    """sft: (model, batch, gather, num_items) -> (loss scaled for gradient accumulation, label count)."""
    trl: tuple[str, str, str] | None = None
    """Preference objectives: (module, trainer class, config class) of the TRL trainer that owns the loss."""
    settings: Callable[[RunConfig], dict] | None = None
    """Preference objectives: the TRL config fields this objective takes from cfg.preference."""

    @property
    def facts(self) -> objective_table.Objective:
        """What the objective trains on and compares with (app.objective_table: the torch-free half of the entry)."""
        return objective_table.get(self.name)

    @property
    def preference(self) -> bool:
        return self.trl is not None


REGISTRY: dict[str, Objective] = {
    "sft": Objective(
        "sft",
        "supervised fine-tuning: cross-entropy on the response tokens (labels -100 on the prompt)",
        prepare_data,
        label_loss,
    ),
    "dpo": Objective(
        "dpo",
        "direct preference optimisation: raise the chosen answer's log-probability over the rejected one's, "
        "measured against a reference model",
        prepare_preference,
        trl=("trl", "DPOTrainer", "DPOConfig"),
        settings=dpo_settings,
    ),
    "orpo": Objective(
        "orpo",
        "odds-ratio preference optimisation: supervised loss on the chosen answer plus an odds-ratio penalty on the "
        "rejected one; no reference model",
        prepare_preference,
        trl=("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig"),
        settings=orpo_settings,
    ),
    "simpo": Objective(
        "simpo",
        "simple preference optimisation: length-normalised log-probability margin with a target gap; no reference "
        "model",
        prepare_preference,
        trl=("trl.experimental.cpo", "CPOTrainer", "CPOConfig"),
        settings=simpo_settings,
    ),
    "kto": Objective(
        "kto",
        "Kahneman-Tversky optimisation: single answers labelled good or bad, measured against a reference model",
        prepare_preference,
        trl=("trl", "KTOTrainer", "KTOConfig"),
        settings=kto_settings,
    ),
}
DEFAULT = "sft"


def get(name: str) -> Objective:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"objective {name!r}: use one of {', '.join(REGISTRY)}") from None


def of(cfg: RunConfig) -> Objective:
    """The objective a run trains with (cfg.objective)."""
    return get(cfg.objective)
