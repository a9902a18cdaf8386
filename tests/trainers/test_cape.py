"""trainers.cape: gates, suffix sums, clamping, interpolation by hand; masking; heads; the official
single-head computation; SASRec with CAPE (padding and trimming change nothing)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.cape import CAPE, contextual_positions, interpolate
from trainers.sasrec import SASRec, SASRecConfig, attention_allowed, time_levels


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_gates_suffix_sums_and_clamping_by_hand():
    logits = torch.tensor([[0.0, math.log(3), -math.log(3)]])  # sigmoid: 1/2, 3/4, 1/4
    g = [0.5, 0.25, 0.75]  # 1 - sigmoid
    p = contextual_positions(logits, None, max_len=10)
    assert torch.allclose(p, torch.tensor([[sum(g), g[1] + g[2], g[2]]]), atol=1e-6)
    # clamped to T - 1
    assert torch.allclose(contextual_positions(logits, None, max_len=2), torch.tensor([[1.0, 1.0, 0.75]]), atol=1e-6)
    # a masked key: ignore (ours) adds nothing, add (official) adds its gate (1 at -inf)
    masked = torch.tensor([[0.0, math.log(3), float("-inf")]])
    allowed = torch.tensor([[True, True, False]])
    ign = contextual_positions(masked, allowed, 10, "ignore")
    add = contextual_positions(masked, allowed, 10, "add")
    assert torch.allclose(ign, torch.tensor([[0.75, 0.25, 0.0]]), atol=1e-6)
    assert torch.allclose(add, torch.tensor([[1.75, 1.25, 1.0]]), atol=1e-6)
    with pytest.raises(ValueError, match="masked_keys"):
        contextual_positions(masked, allowed, 10, "drop")


def test_interpolation_by_hand():
    e = torch.tensor([[10.0, 20.0, 40.0]])  # e_i,t for t = 0, 1, 2
    p = torch.tensor([[0.0, 0.25, 1.5, 2.0]])
    # floor/ceil: 0/0 -> 10; 0/1 at .25 -> 12.5; 1/2 at .5 -> 30; 2/2 -> 40
    assert interpolate(e, p).tolist() == [[10.0, 12.5, 30.0, 40.0]]


def test_per_head_shapes_and_zero_init():
    cape = CAPE(query_dim=4, max_len=6, pos_dim=3, heads=2)
    q = torch.randn(5, 2, 7, 4)
    logits = torch.randn(5, 2, 7, 7)
    out = cape(q, logits)
    assert out.shape == (5, 2, 7, 7)
    assert torch.count_nonzero(out) == 0  # the table starts at zero: an untrained CAPE adds nothing
    assert cape.table_logits(q).shape == (5, 2, 7, 6)
    with pytest.raises(ValueError, match="per-head queries"):
        cape(torch.randn(5, 3, 7, 4), logits)
    # heads are independent: changing head 1's table leaves head 0's output alone
    with torch.no_grad():
        cape.table.normal_()
    before = cape(q, logits)
    with torch.no_grad():
        cape.table[1].normal_()
    after = cape(q, logits)
    assert torch.equal(before[:, 0], after[:, 0]) and not torch.equal(before[:, 1], after[:, 1])


def official_cape(query, attention_weights, pos_emb, pre_proj):
    """The official single-head forward (``yjdy/CAPE`` @ ``4414d78``, ``position_encoding.py``,
    ``CAPE.forward``), transcribed: pos_emb is ``[1, C, T]``, pre_proj Linear + SiLU."""
    G = 1 - torch.sigmoid(attention_weights)
    P = G.flip(-1).cumsum(dim=-1).flip(-1)
    P = P.clamp(max=pos_emb.shape[-1] - 1)
    P_ceil = P.ceil().long()
    P_floor = P.floor().long()
    query = pre_proj(query)
    E = torch.matmul(query, pos_emb)
    E_ceil = E.gather(-1, P_ceil)
    E_floor = E.gather(-1, P_floor)
    frac = P - P_floor
    return frac * E_ceil + (1 - frac) * E_floor


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 9), t=st.integers(1, 12), causal=st.booleans())
def test_one_head_reproduces_the_official_single_head_computation(seed, n, t, causal):
    torch.manual_seed(seed)
    d, c = 8, 4
    cape = CAPE(query_dim=d, max_len=t, pos_dim=c, heads=1, masked_keys="add")
    with torch.no_grad():
        cape.table.normal_()
    linear = torch.nn.Linear(d, c)
    with torch.no_grad():
        linear.weight.copy_(cape.weight[0].T)
        linear.bias.copy_(cape.bias[0])
    pre_proj = torch.nn.Sequential(linear, torch.nn.SiLU())
    q = torch.randn(3, 1, n, d)
    logits = torch.randn(3, 1, n, n) * 3
    allowed = None
    if causal:  # the official masks by -inf logits; "add" gives those keys gate 1 as it does
        allowed = torch.tril(torch.ones(n, n, dtype=torch.bool))
        logits = logits.masked_fill(~allowed, float("-inf"))
    ref = official_cape(q, logits, cape.table[0][None], pre_proj)
    torch.testing.assert_close(cape(q, logits, allowed), ref)


def _sasrec(cape_masked_keys="ignore", rote=False, heads=2):
    torch.manual_seed(0)
    cfg = SASRecConfig(max_len=8, hidden=16, heads=heads, dropout=0.0, cape=True, rote=rote,
                       cape_dim=4, cape_masked_keys=cape_masked_keys)
    model = SASRec(20, cfg).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, CAPE):
                m.table.normal_()
    return model


@pytest.mark.parametrize("rote", [False, True])
def test_sasrec_with_cape_ignores_padding_and_trimming(rote):
    model = _sasrec(rote=rote)
    assert model.pos_emb is None
    real = [5, 7, 3, 9]
    ts = [1.65e9, 1.65e9 + 3_600, 1.65e9 + 90_000, 1.651e9]

    def run(items, times, mask):
        lv = time_levels(np.array([times]), np.array([mask]), "paper") if rote else {}
        return model.encode(torch.tensor([items]), torch.tensor([mask]), {k: torch.from_numpy(v) for k, v in lv.items()})[0]

    left = run([0] * 4 + real, [0.0] * 4 + ts, [False] * 4 + [True] * 4)
    junk = run([11, 2, 19, 4] + real, [1.7e9, 5.0, 1.6e9, 9e8] + ts, [False] * 4 + [True] * 4)
    right = run(real + [0] * 4, ts + [0.0] * 4, [True] * 4 + [False] * 4)
    trimmed = run(real, ts, [True] * 4)
    torch.testing.assert_close(junk[4:], left[4:])
    torch.testing.assert_close(right[:4], left[4:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(trimmed, left[4:], rtol=1e-5, atol=1e-5)
    # CAPE changes the outputs once its table is non-zero
    plain = SASRec(20, SASRecConfig(max_len=8, hidden=16, heads=2, dropout=0.0, cape=True, rote=rote, cape_dim=4)).eval()
    plain.load_state_dict({k: (torch.zeros_like(v) if k.endswith(".cape.table") else v) for k, v in model.state_dict().items()})
    assert not torch.allclose(run(real, ts, [True] * 4), plain.encode(torch.tensor([real]), torch.tensor([[True] * 4]),
                              {k: torch.from_numpy(v) for k, v in (time_levels(np.array([ts]), np.array([[True] * 4]), "paper") if rote else {}).items()})[0])


def test_official_masked_keys_make_positions_depend_on_the_padding_side():
    """With "add", post-padding slots add their gates to every real key's sum, pre-padding ones to
    none: right padding moves the outputs, left padding (and trimming it) does not. "ignore"
    (the default) gives the same outputs either way (the test above)."""
    model = _sasrec("add", heads=1)
    real = [5, 7, 3, 9]
    left = model.encode(torch.tensor([[0] * 4 + real]), torch.tensor([[False] * 4 + [True] * 4]), {})[0, 4:]
    trimmed = model.encode(torch.tensor([real]), torch.tensor([[True] * 4]), {})[0]
    right = model.encode(torch.tensor([real + [0] * 4]), torch.tensor([[True] * 4 + [False] * 4]), {})[0, :4]
    torch.testing.assert_close(left, trimmed, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(left, right, atol=1e-4)


def test_cape_trains_and_the_table_learns():
    model = _sasrec()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, CAPE):
                m.table.zero_()
    items = torch.randint(2, 20, (6, 8))
    mask = torch.ones(6, 8, dtype=torch.bool)
    model.train()
    pos, neg = model(items, mask, {}, torch.randint(2, 20, (6, 8)), torch.randint(2, 20, (6, 8)))
    (pos.sum() - neg.sum()).backward()
    grads = [m.table.grad for m in model.modules() if isinstance(m, CAPE)]
    assert grads and all(g is not None and torch.count_nonzero(g) > 0 for g in grads)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert attention_allowed(mask).shape == (6, 1, 8, 8)
