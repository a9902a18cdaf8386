"""The recall family for RAR: item-to-item neighbours and each user's recall pool as of a cutoff.

``contracts`` holds the tables; ``kernels`` the similarity and pool functions (docs/lookalike.md).
"""
from features.recall.contracts import ITEM_NEIGHBORS, RECALL_ITEMS

__all__ = ["ITEM_NEIGHBORS", "RECALL_ITEMS"]
