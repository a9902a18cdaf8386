"""FAIR: focused attention, constrained decoding over the prefix trie, scores, losses and a short run."""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from features.item_codes import ITEM_CODES
from features.sequences import USER_SEQUENCES
from trainers.fair import (
    FAIR, CodeBook, FAIRConfig, FocusedAttention, PrefixTrie, beam_search, differential_attention, lambda_init_of,
    masked_softmax,
)
from trainers.registry import get_model
from trainers.sasrec import attention_allowed
from trainers.sequences import ItemVocab

_spec = importlib.util.spec_from_file_location("_sasrec_tests", Path(__file__).with_name("test_sasrec.py"))
_sasrec_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sasrec_tests)
LOGS, loo_table = _sasrec_tests.LOGS, _sasrec_tests.loo_table
CUTOFF = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def _qkv(seed: int, b=2, heads=2, length=5, d=4):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, heads, length, d, generator=g) for _ in range(5)]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_differential_attention_is_standard_attention_when_the_second_map_is_zero(seed, length):
    q1, k1, q2, k2, v = _qkv(seed, length=length)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[0, : length // 2] = False  # left padding in the first row
    allowed = attention_allowed(mask)
    standard = masked_softmax(q1, k1, allowed) @ v
    got = differential_attention(q1, k1, q2, k2, v, allowed, lam=0.0, head_norm=False)
    torch.testing.assert_close(got, standard, rtol=0, atol=1e-6)
    # the same through the module: lambda = 0 (zero lambda vectors, lambda_init 0), no norm, same weights
    torch.manual_seed(seed)
    focused = FocusedAttention(8, 2, 0.0, True, 0.0)
    plain = FocusedAttention(8, 2, 0.0, False, 0.0)
    plain.load_state_dict({k: v for k, v in focused.state_dict().items() if k in plain.state_dict()})
    with torch.no_grad():
        for p in (focused.lambda_q1, focused.lambda_k1, focused.lambda_q2, focused.lambda_k2):
            p.zero_()
    assert float(focused.lam().detach()) == 0.0
    x = torch.randn(2, length, 8)
    b, L, h = x.shape

    def split(t):
        return t.view(b, L, 2, 4).transpose(1, 2)

    q1m, k1m, vm = split(focused.q1(x)), split(focused.k1(x)), split(focused.v(x))
    no_norm = differential_attention(q1m, k1m, split(focused.q2(x)), split(focused.k2(x)), vm, allowed, focused.lam(),
                                     head_norm=False)
    torch.testing.assert_close(focused.out(no_norm.transpose(1, 2).reshape(b, L, h)), plain(x, allowed), rtol=0, atol=1e-6)


def test_lambda_by_hand():
    att = FocusedAttention(4, 1, 0.0, True, 0.2)
    with torch.no_grad():
        att.lambda_q1.copy_(torch.tensor([1.0, 0, 0, 0]))
        att.lambda_k1.copy_(torch.tensor([0.5, 0, 0, 0]))
        att.lambda_q2.zero_()
        att.lambda_k2.zero_()
    assert float(att.lam().detach()) == pytest.approx(np.exp(0.5) - 1.0 + 0.2)
    assert lambda_init_of(0) == pytest.approx(0.2) and lambda_init_of(10) == pytest.approx(0.8 - 0.6 * np.exp(-3))


def test_focused_attention_subtracts_the_maps_and_normalises_per_head():
    q1, k1, q2, k2, v = _qkv(1)
    allowed = attention_allowed(torch.ones(2, 5, dtype=torch.bool))
    got = differential_attention(q1, k1, q2, k2, v, allowed, lam=0.5, lambda_init=0.2)
    raw = (masked_softmax(q1, k1, allowed) - 0.5 * masked_softmax(q2, k2, allowed)) @ v
    ref = raw / torch.sqrt((raw * raw).mean(-1, keepdim=True) + 1e-5) * 0.8
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def _random_codes(rng, n_items, levels, size):
    codes = rng.integers(0, size, (n_items, levels))
    codes = np.unique(codes, axis=0)
    return np.concatenate([np.full((2, codes.shape[1]), -1), codes])  # pad and unknown rows first


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 4), st.integers(2, 6), st.integers(1, 8), st.integers(1, 10))
def test_constrained_decoding_never_emits_an_invalid_item(seed, levels, size, beam, k):
    rng = np.random.default_rng(seed)
    codes = _random_codes(rng, 30, levels, size)
    trie = PrefixTrie(codes)
    valid = set(range(2, len(codes)))
    log_probs = [np.log(rng.dirichlet(np.ones(size))) for _ in range(levels)]
    exclude = set(rng.choice(sorted(valid), size=min(3, len(valid)), replace=False).tolist())
    got = beam_search(log_probs, trie, beam, k, exclude)
    items = [i for i, _ in got]
    assert len(items) == len(set(items)) and set(items) <= valid - exclude
    for i, s in got:  # each score is the item's own summed token log-probability
        assert s == pytest.approx(sum(log_probs[j][codes[i, j]] for j in range(levels)))
    # an unbounded beam is exhaustive: the k best non-excluded items by summed score
    full = beam_search(log_probs, trie, len(codes), k, exclude)
    ref = sorted(valid - exclude, key=lambda i: (-sum(log_probs[j][codes[i, j]] for j in range(levels)), tuple(codes[i])))
    assert [i for i, _ in full] == ref[:k]


def test_a_trie_refuses_two_items_with_one_semantic_id():
    with pytest.raises(ValueError, match="share the semantic ID"):
        PrefixTrie(np.array([[-1, -1], [-1, -1], [0, 1], [0, 1]]))


def _config(root, tmp_path, **kw) -> FAIRConfig:
    base = dict(warehouse=root, runs_root=str(tmp_path / "runs"), max_len=4, hidden=8, epochs=2, batch_size=2,
                progress=False, seed=3, noise_weight=0.5, mi_weight=0.5)
    base.update(kw)
    return FAIRConfig(**base)


def _tiny_model(**kw):
    vocab = ItemVocab(("a", "b", "c", "d"))
    book = CodeBook.from_rows(vocab, ["a", "b", "c"], [[0, 1], [0, 2], [1, 0]], [0, 0, 0])
    return FAIR(book.codes, book.sizes, _config("x", Path("/nonexistent"), **kw)), book


def test_scores_are_summed_token_log_probabilities_and_uncoded_items_rank_last():
    torch.manual_seed(0)
    model, book = _tiny_model()
    model.eval()
    items = torch.tensor([[0, 2, 3, 4]])
    mask = items > 0
    with torch.no_grad():
        lp = model.token_log_probs(items, mask)
        scores = model.score_last(items, mask)
    for idx in (2, 3, 4):  # a, b, c
        c = book.codes[idx]
        assert float(scores[0, idx]) == pytest.approx(sum(float(lp[j][0, c[j]]) for j in range(3)), abs=1e-5)
    assert float(scores[0, 5]) == pytest.approx(-1e30) and float(scores[0, 5]) < float(scores[0, 2:5].min())  # d: no code
    assert book.sizes == (2, 3, 1)


@pytest.mark.parametrize("attention", ["focused", "standard"])
def test_every_loss_has_a_gradient_and_padding_changes_nothing(attention):
    torch.manual_seed(0)
    model, _ = _tiny_model(attention=attention)
    items = torch.tensor([[0, 0, 2, 3], [2, 3, 4, 2]])
    mask = items > 0
    pos = torch.tensor([[0, 0, 3, 4], [3, 4, 2, 3]])
    parts = model.losses(items, mask, pos)
    assert set(parts) == {"next", "noise", "mi"}
    for name, value in parts.items():
        model.zero_grad()
        value.backward(retain_graph=True)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), name
    model.eval()
    a = model.score_last(items[:1], mask[:1])
    junk = items[:1].clone()
    junk[0, :2] = 4  # garbage in the pads
    torch.testing.assert_close(model.score_last(junk, mask[:1]), a)
    torch.testing.assert_close(model.score_last(items[:1, 2:], mask[:1, 2:]), a)  # trimmed


def _codes_table(ids, codes, dis=None) -> pa.Table:
    dis = dis or [0] * len(ids)
    return pa.table({
        "item_id": ids, "codes": pa.array(codes, pa.list_(pa.int32())), "disambiguation": pa.array(dis, pa.int32()),
        "semantic_id": ["-".join(map(str, [*c, d])) for c, d in zip(codes, dis)], "embedding": ["cooccurrence"] * len(ids),
        "codebook_version": ["v"] * len(ids), "cutoff_ts": pa.array([CUTOFF] * len(ids), ITEM_CODES.schema.field("cutoff_ts").type),
    })


@pytest.fixture
def root(warehouse):
    warehouse.write_arrow(USER_SEQUENCES, loo_table(LOGS))
    ids = ["a", "b", "c", "d", "e", "f"]
    warehouse.write_arrow(ITEM_CODES, _codes_table(ids, [[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]]))
    return warehouse.uri


@pytest.mark.parametrize("decode", ["full", "beam"])
def test_a_short_run_writes_its_run_directory_is_registered_and_reruns(root, tmp_path, decode):
    spec = get_model("fair")
    assert spec.tables(None) == ["user_sequences", "item_codes"]
    cfg = _config(root, tmp_path, eval_decode=decode, beam=8)
    first = spec.train(cfg)
    again = spec.train(cfg)
    assert first.metrics["test"] == again.metrics["test"]
    run = Path(first.run_dir)
    tables = json.loads((run / "tables.json").read_text())
    assert set(tables) == {"user_sequences", "item_codes"}
    m = json.loads((run / "metrics.json").read_text())
    assert m["items_with_codes"] == 4  # the training vocabulary: a, b, c, d and m["code_sizes"] == [3, 2, 1] and len(m["lambdas"]) == 2
    assert {"hr@5", "hr@10", "ndcg@5", "ndcg@10"} <= set(m["test"])


def test_beam_and_full_decoding_agree_with_a_wide_beam(root, tmp_path):
    from trainers.fair.trainer import evaluate_beam, load
    from trainers.sasrec import evaluate

    cfg = _config(root, tmp_path)
    data, book = load(cfg)
    torch.manual_seed(0)
    model = FAIR(book.codes, book.sizes, cfg)
    full = evaluate(model, data, data.test, "test")
    beam = evaluate_beam(model, data, book, data.test, "test", beam=100)
    for k in ("test_hr@5", "test_hr@10", "test_ndcg@5", "test_ndcg@10"):
        assert beam[k] == pytest.approx(full[k])
