"""trainers.rotary: the multi-level rotary time math (hand cases, invariants, NumPy reference)."""
from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.rotary import FINER_LEVELS, PAPER_LEVELS, Level, MultiLevelRotary, cos_sin, inv_freq, rotate


def test_inv_freq_by_hand():
    f = inv_freq(4, 100.0)
    assert f.dtype == torch.float64
    assert f.tolist() == [1.0, 0.1]  # 100 ** (-0/4), 100 ** (-2/4)


def test_rotation_of_one_pair_by_hand():
    x = torch.tensor([1.0, 0.0, 0.0, 2.0], dtype=torch.float64)
    c, s = cos_sin(torch.tensor(math.pi / 2, dtype=torch.float64), torch.tensor([1.0, 0.5], dtype=torch.float64), torch.float64)
    y = rotate(x, c, s)
    # pair 0 (1, 0) turned by 90 degrees -> (0, 1); pair 1 (0, 2) turned by 45 degrees -> (-sqrt2, sqrt2)
    np.testing.assert_allclose(y.numpy(), [0.0, 1.0, -math.sqrt(2), math.sqrt(2)], atol=1e-12)


def test_paper_weights_and_bases():
    assert [(lv.name, lv.base, lv.weight) for lv in PAPER_LEVELS] == [
        ("years_f", 1e6, 1.5), ("months_f", 1e4, 1.0), ("days_f", 100.0, 0.5)
    ]
    assert FINER_LEVELS[:3] == PAPER_LEVELS and FINER_LEVELS[3].name == "hour_id"


def numpy_rote(x: np.ndarray, t: dict[str, np.ndarray], levels) -> np.ndarray:
    """Plain NumPy reference of the spec: sum_l w_l * R_l(x), interleaved pairs, omega = base^(-2i/d)."""
    d = x.shape[-1]
    out = np.zeros_like(x)
    for lv in levels:
        omega = lv.base ** (-np.arange(0, d, 2) / d)
        theta = t[lv.name][..., None] * omega
        c, s = np.cos(theta), np.sin(theta)
        e, o = x[..., 0::2], x[..., 1::2]
        rot = np.empty_like(x)
        rot[..., 0::2], rot[..., 1::2] = e * c - o * s, e * s + o * c
        out += lv.weight * rot
    return out


def test_fused_rotation_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 1, 5, 8))
    days = rng.uniform(18_000, 20_000, size=(2, 5))
    t = {"days_f": days, "months_f": days / 30.4375, "years_f": days / 365.25}
    mod = MultiLevelRotary(8, PAPER_LEVELS)
    got = mod(torch.from_numpy(x), mod.cache({k: torch.from_numpy(v) for k, v in t.items()}, torch.float64))
    expect = numpy_rote(x, {k: v[:, None, :] for k, v in t.items()}, PAPER_LEVELS)
    np.testing.assert_allclose(got.numpy(), expect, rtol=1e-9, atol=1e-9)


times = st.floats(0, 30_000, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(t1=times, t2=times, shift=st.floats(-10_000, 10_000), seed=st.integers(0, 2**16), base=st.sampled_from([100.0, 1e4, 1e6]))
def test_single_level_scores_are_invariant_to_shifting_all_timestamps(t1, t2, shift, seed, base):
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(16, generator=gen, dtype=torch.float64), torch.randn(16, generator=gen, dtype=torch.float64)
    mod = MultiLevelRotary(16, (Level("days_f", base, 1.0),))

    def score(a, b):
        ca = mod.cache({"days_f": torch.tensor([[a]], dtype=torch.float64)}, torch.float64)
        cb = mod.cache({"days_f": torch.tensor([[b]], dtype=torch.float64)}, torch.float64)
        return float((mod(q.view(1, 1, 1, -1), ca) * mod(k.view(1, 1, 1, -1), cb)).sum())

    assert math.isclose(score(t1, t2), score(t1 + shift, t2 + shift), rel_tol=1e-6, abs_tol=1e-6)


def test_the_fused_levels_are_not_shift_invariant():
    """The spec's observation: cross-level terms make the weighted sum depend on absolute time."""
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 1, 1, 64, generator=gen, dtype=torch.float64), torch.randn(1, 1, 1, 64, generator=gen, dtype=torch.float64)
    mod = MultiLevelRotary(64, PAPER_LEVELS)

    def score(days_q, days_k):
        def c(d):
            return mod.cache({"days_f": torch.tensor([[d]], dtype=torch.float64),
                              "months_f": torch.tensor([[d / 30.4375]], dtype=torch.float64),
                              "years_f": torch.tensor([[d / 365.25]], dtype=torch.float64)}, torch.float64)
        return float((mod(q, c(days_q)) * mod(k, c(days_k))).sum())

    assert abs(score(19_000, 18_990) - score(29_000, 28_990)) > 1e-3


@settings(max_examples=60, deadline=None)
@given(t=st.floats(0, 1e6, allow_nan=False), seed=st.integers(0, 2**16), base=st.floats(2, 1e7), half=st.integers(1, 32))
def test_rotation_preserves_norms(t, seed, base, half):
    d = 2 * half
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    c, s = cos_sin(torch.full((3,), t, dtype=torch.float64), inv_freq(d, base), torch.float64)
    y = rotate(x, c, s)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-12, atol=1e-12)
    # pairwise, too: each (even, odd) pair keeps its length
    torch.testing.assert_close(y.view(3, half, 2).norm(dim=-1), x.view(3, half, 2).norm(dim=-1), rtol=1e-12, atol=1e-12)


def test_angles_are_computed_in_float64():
    """Days since 1970 at the day level's fastest frequency: float32 angles would be off by ~1e-3 rad."""
    t = torch.tensor([19_000.123456], dtype=torch.float64)
    c, s = cos_sin(t, inv_freq(2, 100.0), torch.float32)
    assert c.dtype == torch.float32
    np.testing.assert_allclose([c.item(), s.item()], [math.cos(19_000.123456), math.sin(19_000.123456)], atol=1e-6)
    f32 = (t.float() * inv_freq(2, 100.0).float()).cos().item()
    assert abs(f32 - math.cos(19_000.123456)) > 1e-5  # what float32 angles would give
