"""Multi-task backbones (single-task, shared-bottom, MMoE, PLE), our EKTM design, and the ESMM heads.

Every model maps encoded fields ``x`` [B, F] to one logit per task [B, K]. For the multi-task
models (``conditional = True``) the first logit is the click's and logit k > 0 is the task's
*given a click*: ``p(task) = p(click) · p(task | click)`` (ESMM; :mod:`trainers.multitask.losses`).
The single-task baseline (``conditional = False``) is K independent networks, each predicting
its task's exposure-space label directly.

Each model says which parameters the tasks share (:meth:`shared_parameters`, what PUB balances)
and which belong to one task (:meth:`task_parameters`): shared are the embeddings, the
shared-bottom MLP, the MMoE experts, the PLE shared experts and the EKTM router; task-specific
are the gates, the PLE task experts, the EKTM transmitters and enhanced modules, and the towers.

EKTM (Effective Knowledge Transfer for Multi-task recommendation, arXiv 2605.05730) is known
only from its abstract: a router that gathers knowledge from all tasks and hands it back out,
a transmitter per task that turns what the router sends into a form the task can use, and an
enhanced module that keeps the transfer from hurting the task. The modules below are **our
design** of those three parts (docs/training.md), not the paper's:

- router: attention across the tasks' backbone outputs ``h_j``. Task k's query is
  ``W_q h_k + e_k`` (a learned task query), the keys and values are ``W_k h_j``, ``W_v h_j``
  for every task j, and ``r_k = Σ_j softmax_j(q_k·k_j / sqrt(a)) v_j``. The donors (j ≠ k) are
  detached: task k's loss trains the router but cannot move the other tasks' representations.
- transmitter k: ``t_k = ReLU(A_k r_k + c_k)``, one linear map per task.
- enhanced module k: a gated residual ``h'_k = h_k + σ(B_k [h_k; t_k] + b_k) ⊙ t_k``, with the
  gate bias starting at ``gate_bias`` (−2: about 12 % open), so a task starts from its own
  representation and opens the gate only as far as the transfer lowers its loss; the tower sees
  ``h'_k``.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F


class FieldEmbedding(nn.Module):
    """One embedding table for all fields (offsets per field); output [B, F * dim]."""

    def __init__(self, cardinalities: Sequence[int], dim: int):
        super().__init__()
        offsets = torch.tensor([0, *list(cardinalities)[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Embedding(int(sum(cardinalities)), dim)
        nn.init.normal_(self.table.weight, std=0.01)
        self.out_dim = len(cardinalities) * dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table(x + self.offsets).flatten(1)


class BatchedLinear(nn.Module):
    """``n`` independent linear maps: [B, in] (shared input) or [B, n, in] -> [B, n, out]."""

    def __init__(self, n: int, in_dim: int, out_dim: int, bias_init: float | None = None):
        super().__init__()
        bound = 1 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, out_dim).uniform_(-bound, bound) if bias_init is None
                                 else torch.full((n, out_dim), float(bias_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return torch.einsum("bi,nio->bno", x, self.weight) + self.bias
        return torch.einsum("bni,nio->bno", x, self.weight) + self.bias


class BatchedMLP(nn.Module):
    """``n`` independent ReLU MLPs (the last layer too unless ``last_linear``); [B, (n,) in] -> [B, n, out]."""

    def __init__(self, n: int, in_dim: int, dims: Sequence[int], dropout: float = 0.0, last_linear: bool = False):
        super().__init__()
        layers, d = [], in_dim
        for out in dims:
            layers.append(BatchedLinear(n, d, out))
            d = out
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.last_linear = last_linear
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if not (self.last_linear and i == len(self.layers) - 1):
                x = self.dropout(F.relu(x))
        return x


class Towers(nn.Module):
    """One tower per task: [B, K, D] -> logits [B, K]."""

    def __init__(self, k: int, in_dim: int, dims: Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.mlp = BatchedMLP(k, in_dim, (*dims, 1), dropout, last_linear=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h).squeeze(-1)


class EKTM(nn.Module):
    """Our router / transmitter / enhanced-module design (module docstring): [B, K, D] -> [B, K, D].

    ``last_attention`` keeps the router's [B, K, K] weights of the last forward pass.
    """

    def __init__(self, k: int, dim: int, attn_dim: int = 16, gate_bias: float = -2.0):
        super().__init__()
        self.k, self.attn_dim = k, attn_dim
        # router (shared)
        self.query = nn.Linear(dim, attn_dim)
        self.key = nn.Linear(dim, attn_dim)
        self.value = nn.Linear(dim, dim)
        # per task
        self.task_query = nn.Parameter(torch.zeros(k, attn_dim))
        self.transmitter = BatchedLinear(k, dim, dim)
        self.gate = BatchedLinear(k, 2 * dim, dim, bias_init=gate_bias)
        self.last_attention: torch.Tensor | None = None

    def router_parameters(self) -> Iterator[nn.Parameter]:
        for m in (self.query, self.key, self.value):
            yield from m.parameters()

    def task_parameters(self) -> Iterator[nn.Parameter]:
        yield self.task_query
        yield from self.transmitter.parameters()
        yield from self.gate.parameters()

    def route(self, h: torch.Tensor) -> torch.Tensor:
        donors = h.detach()
        q = self.query(h) + self.task_query
        keys = self.key(donors)
        att = torch.softmax(q @ keys.transpose(1, 2) / math.sqrt(self.attn_dim), dim=-1)  # [B, K(target), K(source)]
        self.last_attention = att.detach()
        v_donor, v_own = self.value(donors), self.value(h)
        own = torch.diagonal(att, dim1=1, dim2=2).unsqueeze(-1)  # a_kk
        # the same values as att @ v_donor, with task k's own term carrying its gradient
        return att @ v_donor + own * (v_own - v_donor)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        t = F.relu(self.transmitter(self.route(h)))
        g = torch.sigmoid(self.gate(torch.cat([h, t], dim=-1)))
        return h + g * t


class MultiTaskModel(nn.Module):
    """Embedding -> backbone (task representations [B, K, D]) -> optional EKTM -> towers."""

    conditional = True

    def __init__(self, backbone: nn.Module, k: int, tower_dims: Sequence[int], dropout: float = 0.0,
                 ektm: EKTM | None = None):
        super().__init__()
        self.backbone = backbone
        self.ektm = ektm
        self.towers = Towers(k, backbone.out_dim, tower_dims, dropout)

    def representations(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone(x)
        return self.ektm(h) if self.ektm is not None else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.towers(self.representations(x))

    def shared_parameters(self) -> list[nn.Parameter]:
        out = list(self.backbone.shared_parameters())
        if self.ektm is not None:
            out += list(self.ektm.router_parameters())
        return out

    def task_parameters(self) -> list[nn.Parameter]:
        out = list(self.backbone.task_parameters()) + list(self.towers.parameters())
        if self.ektm is not None:
            out += list(self.ektm.task_parameters())
        return out


class SharedBottom(nn.Module):
    def __init__(self, cards: Sequence[int], k: int, dim: int, bottom_dims: Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.k = k
        self.embedding = FieldEmbedding(cards, dim)
        self.bottom = BatchedMLP(1, self.embedding.out_dim, bottom_dims, dropout)
        self.out_dim = self.bottom.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottom(self.embedding(x)).expand(-1, self.k, -1)

    def shared_parameters(self):
        return [*self.embedding.parameters(), *self.bottom.parameters()]

    def task_parameters(self):
        return []


class MMoE(nn.Module):
    """Experts shared by all tasks, one softmax gate per task over them."""

    def __init__(self, cards: Sequence[int], k: int, dim: int, experts: int, expert_dims: Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.embedding = FieldEmbedding(cards, dim)
        self.experts = BatchedMLP(experts, self.embedding.out_dim, expert_dims, dropout)
        self.gates = BatchedLinear(k, self.embedding.out_dim, experts)
        self.out_dim = self.experts.out_dim
        self.last_gates: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x)
        out = self.experts(e)  # [B, E, D]
        g = torch.softmax(self.gates(e), dim=-1)  # [B, K, E]
        self.last_gates = g.detach()
        return g @ out  # [B, K, D]

    def shared_parameters(self):
        return [*self.embedding.parameters(), *self.experts.parameters()]

    def task_parameters(self):
        return list(self.gates.parameters())


class PLE(nn.Module):
    """PLE with one extraction layer (CGC): shared experts and each task's own experts, a gate per task over both."""

    def __init__(self, cards: Sequence[int], k: int, dim: int, shared_experts: int, task_experts: int,
                 expert_dims: Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.k, self.s, self.p = k, shared_experts, task_experts
        self.embedding = FieldEmbedding(cards, dim)
        self.shared = BatchedMLP(shared_experts, self.embedding.out_dim, expert_dims, dropout)
        self.own = BatchedMLP(k * task_experts, self.embedding.out_dim, expert_dims, dropout)
        self.gates = BatchedLinear(k, self.embedding.out_dim, shared_experts + task_experts)
        self.out_dim = self.shared.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x)
        b = e.shape[0]
        shared = self.shared(e)  # [B, S, D]
        own = self.own(e).reshape(b, self.k, self.p, -1)  # [B, K, P, D]
        pool = torch.cat([shared.unsqueeze(1).expand(-1, self.k, -1, -1), own], dim=2)  # [B, K, S+P, D]
        g = torch.softmax(self.gates(e), dim=-1).unsqueeze(-1)  # [B, K, S+P, 1]
        return (g * pool).sum(2)

    def shared_parameters(self):
        return [*self.embedding.parameters(), *self.shared.parameters()]

    def task_parameters(self):
        return [*self.own.parameters(), *self.gates.parameters()]


class SingleTask(nn.Module):
    """K independent networks (embedding, MLP, tower), each on its task's exposure-space label."""

    conditional = False

    def __init__(self, cards: Sequence[int], k: int, dim: int, bottom_dims: Sequence[int], tower_dims: Sequence[int],
                 dropout: float = 0.0):
        super().__init__()
        self.nets = nn.ModuleList(
            nn.Sequential(FieldEmbedding(cards, dim), _Squeeze(BatchedMLP(1, len(cards) * dim, (*bottom_dims, *tower_dims, 1),
                                                                           dropout, last_linear=True)))
            for _ in range(k)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.nets], dim=1)

    def shared_parameters(self) -> list[nn.Parameter]:
        return []

    def task_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())


class _Squeeze(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).reshape(x.shape[0])


def build_model(backbone: str, cards: Sequence[int], k: int, *, embed_dim: int = 8, bottom_dims=(64,), expert_dims=(64,),
                experts: int = 4, shared_experts: int = 2, task_experts: int = 1, tower_dims=(32,), dropout: float = 0.0,
                ektm: bool = False, ektm_dim: int = 16, ektm_gate_bias: float = -2.0) -> nn.Module:
    if backbone == "single":
        if ektm:
            raise ValueError("EKTM transfers between tasks: it needs a multi-task backbone (mmoe or ple)")
        return SingleTask(cards, k, embed_dim, bottom_dims, tower_dims, dropout)
    if backbone == "shared_bottom":
        body = SharedBottom(cards, k, embed_dim, bottom_dims, dropout)
    elif backbone == "mmoe":
        body = MMoE(cards, k, embed_dim, experts, expert_dims, dropout)
    elif backbone == "ple":
        body = PLE(cards, k, embed_dim, shared_experts, task_experts, expert_dims, dropout)
    else:
        raise ValueError(f"unknown backbone {backbone!r}")
    module = EKTM(k, body.out_dim, ektm_dim, ektm_gate_bias) if ektm else None
    return MultiTaskModel(body, k, tower_dims, dropout, module)
