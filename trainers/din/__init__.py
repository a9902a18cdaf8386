"""DIN: Deep Interest Network (Zhou et al., KDD'18) for click-through rate, optionally with CAPE
contextual positions in its target attention.

Reads ``events`` (and ``items`` for the item side fields) through the contracts; the model page
is the "DIN" section of ``docs/training.md``.

**Rows and labels.** One row per impression (an ``events`` row whose ``is_click`` is not null),
label ``is_click``. Split by whole UTC days of ``event_date`` exactly as the watch-time models
(:class:`trainers.config.DateSplit`: train, validation and test are consecutive day windows
ending at the last day of ``events``).

**Point-in-time history.** For an impression of user ``u`` at time ``t`` the history is the
user's behaviours (``history``: their clicks, or all their impressions) with ``event_ts < t``,
strictly: an event at the same microsecond as the impression (a tie, or the impression itself)
is never in it, whatever the source order. The most recent ``max_len`` are kept, oldest first,
left-padded. Histories may draw on every earlier day of ``events`` (``history_days`` limits how
far before the training window), including the validation days for test rows, since those
events happened before the impression. Built by :func:`history_windows` with one sort and a
binary search, no per-user loop; ``tests/trainers/test_din.py`` checks it against a brute-force
reference on data full of ties.

**Inputs.** Every behaviour and the target are one item vector: the concatenated embeddings of
``item_id`` and the item side fields (``item_fields``, from ``items``; a field the source lacks
is left out). Encoders are fitted on the training days' impressions; index 0 is an unseen or
null value.

**Model.** The attention unit scores each history item ``h_j`` against the target ``t`` with an
MLP over ``[h_j, t, h_j - t, h_j * t]`` (Dice or PReLU), and the history is sum-pooled with these
raw scores as weights: no softmax, as in DIN. Pads get weight 0. With ``cape`` the target is
CAPE's single query (:meth:`trainers.cape.CAPE.target_attention`): gates ``1 - sigmoid(a_j)`` of
the target-history scores, suffix sums to the most recent item, the interpolated table logits
added to the scores before pooling. The tower is an MLP over ``[t, pooled]`` to one logit,
trained with BCE.

**Dice** (:class:`Dice`) normalises with batch statistics in training and running statistics
in evaluation (FuxiCTR's ``Dice``: batch norm without affine, eps 1e-9, momentum 0.01, alpha
from 0). In the attention unit the statistics are taken over *real* history positions only:
FuxiCTR feeds the pads into the batch norm, so there the padding changes the outputs in
training. Here pads change no output, in training or evaluation (tested).

**Evaluation** on the validation days (each epoch) and the test days (best epoch): gAUC
(per-user AUC weighted by the user's impressions, users with both classes only,
:func:`trainers.metrics.gauc_impressions`), AUC and logloss of ``sigmoid(logit)``.

Modules: :mod:`~trainers.din.config` (settings), :mod:`~trainers.din.data` (impressions and
histories), :mod:`~trainers.din.model` (the network) and :mod:`~trainers.din.trainer`
(batches, evaluation, the run, the registry spec ``SPEC``); every public name is importable
from ``trainers.din``.
"""
from trainers.din.config import EVENTS_TABLE, ITEM_FIELDS, ITEMS_TABLE, LOWER_IS_BETTER, MODEL_NAME, DINConfig, ItemField
from trainers.din.data import EVENT_COLUMNS, DINData, Impressions, history_arrays, history_windows, load_din_data
from trainers.din.model import DIN, MLP, Dice, PReLU, TargetAttention
from trainers.din.trainer import (
    BUCKET_BATCHES,
    SPEC,
    batch_tensors,
    evaluate_logits,
    loss_of,
    predict,
    tables,
    train,
    train_batches,
    train_on_data,
)

__all__ = [
    "EVENTS_TABLE", "ITEM_FIELDS", "ITEMS_TABLE", "LOWER_IS_BETTER", "MODEL_NAME", "DINConfig", "ItemField",
    "EVENT_COLUMNS", "DINData", "Impressions", "history_arrays", "history_windows", "load_din_data", "DIN", "MLP",
    "Dice", "PReLU", "TargetAttention", "BUCKET_BATCHES", "SPEC", "batch_tensors", "evaluate_logits", "loss_of",
    "predict", "tables", "train", "train_batches", "train_on_data",
]
