"""FAIR: generative recommendation over semantic IDs with focused attention (docs/fair.md).

Reads ``user_sequences`` (leave-one-out) through SASRec's data path and ``item_codes`` (the
semantic IDs, :mod:`pipelines.item_codes`). Each item is a sequence of code tokens; a Transformer
over the history's token embeddings predicts the next item's tokens in parallel, with focused
(differential) attention, a noise-robustness consistency loss and an InfoNCE mutual-information
loss; decoding maps generated codes to real items through a prefix trie (constrained beam
search), and evaluation scores every valid code sequence (exhaustive constrained decoding).
Spec: ``shared/specs/sequences.md`` section 4; no FAIR code is public, so every detail not in the
spec is ours and is listed in docs/fair.md.

Modules: :mod:`~trainers.fair.config`, :mod:`~trainers.fair.codes` (code book, trie, beam
search), :mod:`~trainers.fair.model` (focused attention, the network, its losses),
:mod:`~trainers.fair.trainer` (the run, the registry spec ``SPEC``).
"""
from trainers.fair.codes import CodeBook, PrefixTrie, beam_search
from trainers.fair.config import KS, MODEL_NAME, FAIRConfig
from trainers.fair.model import FAIR, FocusedAttention, differential_attention, lambda_init_of, masked_softmax
from trainers.fair.trainer import SPEC, evaluate_beam, evaluate_fair, load, loss_of, tables, train

__all__ = [
    "CodeBook", "PrefixTrie", "beam_search", "KS", "MODEL_NAME", "FAIRConfig", "FAIR", "FocusedAttention",
    "differential_attention", "lambda_init_of", "masked_softmax", "SPEC", "evaluate_beam", "evaluate_fair", "load",
    "loss_of", "tables", "train",
]
