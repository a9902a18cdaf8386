"""SASRec (Kang and McAuley, 2018), optionally with RoTE multi-level rotary time embeddings
and/or CAPE contextual position logits.

Reads ``user_sequences`` (leave-one-out split) through :mod:`trainers.sequences`; the model page
is ``docs/sasrec.md``. Defaults follow the RoTE code's SASRec config
(``XiaoLongtaoo/RoTE`` @ ``11ea986``, ``configs/rote_sasrec.yaml``; spec section 1.4):
hidden 64, 2 blocks, 1 head, dropout 0.5, post-LN, xavier-normal init, max length 50, Adam
(lr 1e-3, betas 0.9 / 0.98), BCE on one positive and one sampled negative per position.

Data per user (leave-one-out, one row per target event in the table):

* **train**: the user's *last* ``train`` row; input = its history (the most recent ``max_len``
  train events), positives = the history shifted by one plus the row's target (the next item at
  every position), one negative per position drawn uniformly from the known items outside the
  user's training items. Users whose last train row has no history are skipped (as the official
  sampler skips users with one training item).
* **valid** / **test**: the ``valid`` / ``test`` row; its history already ends with the
  validation item for test (the spec's "append the validation item").
* **evaluation**: full ranking of all known items at the last position, excluding every other
  item of the user (train, valid and test targets), HR@5/10 and NDCG@5/10
  (:func:`trainers.metrics.full_ranking_metrics`, pessimistic ties). A target outside the
  training vocabulary cannot be ranked and counts as a miss (``*_unknown_targets``).

RoTE (``rote=True``): Q and K of every layer are rotated by :class:`trainers.rotary.MultiLevelRotary`
with each input item's own time (so the last position's query time is the last input item's
time; the target's time is never used), and the learned position embedding is removed.

CAPE (``cape=True``, :mod:`trainers.cape`): in every layer, per head, contextual position logits
computed from the scaled, masked attention logits and the query the attention uses (rotated when
RoTE is on) are added to the logits before the softmax; the learned position embedding is removed
(CAPE's positions replace it). Masked keys (future and padding) add nothing to the gate sums by
default (``cape_masked_keys``), so the outputs do not depend on the padding.

Differences from the official code, on purpose (see ``docs/sasrec.md``): a key-padding mask
(the official attention has only the causal mask, so pads leak into real positions), float64
rotary angles, position ids counted from the end of the real sequence, one fixed evaluation
sample of users per run (the official code draws 10,000 users anew at each evaluation).

Modules: :mod:`~trainers.sasrec.config` (settings), :mod:`~trainers.sasrec.data` (the splits
and negatives), :mod:`~trainers.sasrec.model` (the network), :mod:`~trainers.sasrec.evaluate`
(full ranking) and :mod:`~trainers.sasrec.trainer` (batches, the run, the registry spec
``SPEC``); every public name is importable from ``trainers.sasrec``.
"""
from trainers.sasrec.config import KS, MODEL_NAME, SASRecConfig
from trainers.sasrec.data import SASRecData, Split, first_used_column, load_data, sample_negatives, sample_users, time_levels
from trainers.sasrec.evaluate import evaluate, rank_scores
from trainers.sasrec.model import SASRec, FeedForward, TimeAttention, attention_allowed, bce_loss, position_ids
from trainers.sasrec.trainer import BUCKET_BATCHES, SPEC, fit_kwargs, loss_of, tables, train, train_batches

__all__ = [
    "KS", "MODEL_NAME", "SASRecConfig", "SASRecData", "Split", "first_used_column", "load_data", "sample_negatives",
    "sample_users", "time_levels", "evaluate", "rank_scores", "SASRec", "FeedForward", "TimeAttention",
    "attention_allowed", "bce_loss", "position_ids", "BUCKET_BATCHES", "SPEC", "fit_kwargs", "loss_of", "tables",
    "train", "train_batches",
]
