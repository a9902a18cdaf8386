"""RAR: Recall-Augmented Ranking (Huang et al., WWW'24, arXiv 2404.09578) on recfeat's tables.

A CTR backbone (DeepFM or DIN) whose user side is enriched with two cross-stage sources, each read
point in time from the build valid at the example's time (:mod:`trainers.rar.selection`):

- **u2u**: the user's ``k_users`` look-alike users (``lookalike_users``);
- **i2i**: the ``k_items`` items of the user's recall pool (``recall_items``) most similar to the
  target item (SimHash over the model's item embeddings, or the exact cosine).

A co-interaction module (:class:`trainers.rar.model.CoInteraction`, set-to-set attention between
the two sets, pooled with the target as the query) gives one vector that the backbone's deep part
reads; the joint loss adds a recall-item supervision term (``recall_loss_weight``). No code of the
paper is public: every choice is ours and documented in ``docs/rar.md``.
"""
from trainers.rar.config import MODEL_NAME, RARConfig
from trainers.rar.data import RARData, Sets, load_rar_data
from trainers.rar.model import RAR, RARDIN, CoInteraction, RARDeepFM, SetAttention, masked_softmax, target_pool
from trainers.rar.selection import Build, choose_builds, list_builds
from trainers.rar.trainer import SPEC, batch_tensors, joint_loss, predict, tables, train, train_on_data

__all__ = [
    "MODEL_NAME", "RAR", "RARConfig", "RARDIN", "RARData", "RARDeepFM", "SPEC", "Build", "CoInteraction", "SetAttention",
    "Sets", "batch_tensors", "choose_builds", "joint_loss", "list_builds", "load_rar_data", "masked_softmax", "predict",
    "tables", "target_pool", "train", "train_on_data",
]
