"""FM and DeepFM backbones over categorical fields; both output one raw score per row.

Inputs are field indices (``x``: int64 [batch, fields]); each field has its own index range in
one shared embedding table (offsets), index 0 of each field being the unknown value.

- FM (Rendle 2010): ``b + Σ_f w[x_f] + ½ Σ_k ((Σ_f v_fk)² − Σ_f v_fk²)``.
- DeepFM (Guo et al. 2017): FM plus an MLP over the concatenated field embeddings, summed into
  the score; the D²Co code's torchfm defaults: embedding 10, MLP 64-64-64, dropout 0.2.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FieldEmbedding(nn.Module):
    def __init__(self, cardinalities: Sequence[int], dim: int):
        super().__init__()
        offsets = torch.tensor([0, *list(torch.tensor(list(cardinalities)).cumsum(0)[:-1].tolist())], dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)
        self.embedding = nn.Embedding(int(sum(cardinalities)), dim)
        nn.init.xavier_uniform_(self.embedding.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x + self.offsets)


class FM(nn.Module):
    def __init__(self, cardinalities: Sequence[int], embed_dim: int = 10):
        super().__init__()
        self.linear = FieldEmbedding(cardinalities, 1)
        nn.init.zeros_(self.linear.embedding.weight)
        self.bias = nn.Parameter(torch.zeros(1))
        self.embed = FieldEmbedding(cardinalities, embed_dim)

    def fm_score(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        linear = self.linear(x).sum(dim=(1, 2)) + self.bias
        inter = 0.5 * (e.sum(dim=1).pow(2) - e.pow(2).sum(dim=1)).sum(dim=1)
        return linear + inter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fm_score(x, self.embed(x))


class DeepFM(FM):
    def __init__(
        self, cardinalities: Sequence[int], embed_dim: int = 10, mlp_dims: Sequence[int] = (64, 64, 64), dropout: float = 0.2
    ):
        super().__init__(cardinalities, embed_dim)
        layers: list[nn.Module] = []
        width = len(cardinalities) * embed_dim
        for h in mlp_dims:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embed(x)
        return self.fm_score(x, e) + self.mlp(e.flatten(1)).squeeze(1)


def build_backbone(name: str, cardinalities: Sequence[int], embed_dim: int, mlp_dims: Sequence[int], dropout: float) -> nn.Module:
    if name == "fm":
        return FM(cardinalities, embed_dim)
    if name == "deepfm":
        return DeepFM(cardinalities, embed_dim, mlp_dims, dropout)
    raise ValueError(f"unknown backbone {name!r} (fm or deepfm)")
