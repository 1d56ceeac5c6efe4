"""Layer-importance metrics on constructed layers with known answers, streaming over batches, one-shot pruning
and the iterative schedule."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slimasr.model import build_model, load_model
from slimasr.prune import (ConsistencyTracker, LayerScores, MetricScores, kendall_agreement, kendall_tau,
                           oneshot_prune, oracle_scores, plot_score_history, plot_scores, rank_layers, remove_layers,
                           score_layers, select_layers_to_remove)
from slimasr.prune.metrics import _ctc_loss_sum_twice_differentiable, _loss_sum

DATA_METRICS = ["correlation", "correlation_raw", "energy", "gradient", "hessian", "taylor"]


def _tiny(seed=0):
    torch.manual_seed(seed)
    return build_model("tiny").eval()


def _batch(b=4, t=100, u=6, seed=0, vocab=40):
    """Random features of decreasing lengths (so there is padding) with alignable random targets."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, t, 80, generator=g)
    lens = torch.tensor([t - 7 * i for i in range(b)])
    tl = torch.tensor([u - i % 3 for i in range(b)])
    tg = torch.full((b, u), -1)
    for k in range(b):
        tg[k, : tl[k]] = torch.randint(1, vocab - 1, (int(tl[k]),), generator=g)
    for k in range(b):
        feats[k, lens[k]:] = 0.0
    return {"feats": feats, "feats_lens": lens, "targets": tg, "target_lens": tl}


def _split(batch, parts):
    """The same utterances in smaller batches, each padded only to its own longest utterance."""
    out = []
    for idx in parts:
        idx = torch.tensor(idx)
        t = int(batch["feats_lens"][idx].max())
        u = int(batch["target_lens"][idx].max())
        out.append({"feats": batch["feats"][idx, :t], "feats_lens": batch["feats_lens"][idx],
                    "targets": batch["targets"][idx, :u], "target_lens": batch["target_lens"][idx]})
    return out


def _make_identity(model, k):
    """Layer k (k >= 1) becomes the identity: its four residual branches output zero, so it computes
    norm_final(x); its input is the output of layer k-1's norm_final, and both LayerNorms have weight 1 and bias 0
    (as initialised), so norm_final(x) == x up to the LayerNorm epsilon. The real ConformerLayer stays in place:
    the same code path, removable and streamable like any other layer."""
    layer = model.encoder.layers[k]
    for lin in (layer.ffn_macaron.w2, layer.attn.linear_out, layer.conv.pointwise2, layer.ffn.w2):
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    for ln in (layer.norm_final, model.encoder.layers[k - 1].norm_final):
        assert torch.equal(ln.weight, torch.ones_like(ln.weight)) and torch.equal(ln.bias, torch.zeros_like(ln.bias))
    return [*layer.parameters(), *model.encoder.layers[k - 1].norm_final.parameters()]


# ------------------------------------------------------------------------------------------------ known answers
@pytest.mark.slow
def test_identity_layer_is_least_important_by_correlation_and_oracle():
    k = 2
    model = _tiny()
    frozen = {id(p) for p in _make_identity(model, k)}
    batches = [_batch(seed=0), _batch(seed=1)]
    # a little training (with the identity frozen) so that removing a real layer hurts the loss
    opt = torch.optim.Adam([p for p in model.parameters() if id(p) not in frozen], lr=5e-3)
    model.train()
    for step in range(60):
        loss = model(**batches[step % 2], sample_chunking=False)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        _, _, hidden = model.encoder(batches[0]["feats"], batches[0]["feats_lens"], return_hidden=True)
    assert (hidden[k + 1] - hidden[k]).abs().max() < 1e-4

    s = score_layers(model, batches, ["correlation", "correlation_raw", "oracle", "taylor"], progress=False)
    assert s["correlation"].ranks[k] == 0
    assert s["correlation"].scores[k] == pytest.approx(1.0, abs=1e-6)
    assert max(s["correlation"].scores[i] for i in range(4) if i != k) < 0.999
    assert s["oracle"].ranks[k] == 0
    assert s["oracle"].scores[k] == pytest.approx(s.info["oracle_full_loss"], rel=1e-5)
    assert abs(s["taylor"].scores[k]) < 1e-4
    # the raw eq. 2 score of layer 0 is inflated by the front-end's activation scale: why cosine is the default
    assert s["correlation_raw"].scores[0] > s["correlation_raw"].scores[k]


def test_zero_output_layer_has_lowest_energy():
    model = _tiny()
    with torch.no_grad():
        model.encoder.layers[1].norm_final.weight.zero_()
        model.encoder.layers[1].norm_final.bias.zero_()
    s = score_layers(model, [_batch()], ["energy"], progress=False)
    assert s["energy"].scores[1] == 0.0
    assert s["energy"].ranks[1] == 0 and min(s["energy"].scores[i] for i in (0, 2, 3)) > 1.0


def test_energy_is_eq3_and_its_closed_form():
    """Eq. 3 from eigenvalues equals (D-1)/D * ||X||_F^2 / T (the eigenvalues are >= 0 and sum to the trace)."""
    model = _tiny()
    batch = _batch()
    s = score_layers(model, [batch], ["energy"], progress=False)
    with torch.no_grad():
        _, lens, hidden = model.encoder(batch["feats"], batch["feats_lens"], return_hidden=True)
    d = hidden[0].size(-1)
    for i in range(4):
        per_utt = [(d - 1) / d * hidden[i + 1][b, : lens[b]].double().pow(2).sum() / lens[b] for b in range(4)]
        assert s["energy"].scores[i] == pytest.approx(float(sum(per_utt) / 4), rel=1e-6)


def test_gradient_and_hessian_match_finite_differences():
    """S_G = d/de L(X^i + e X^{i-1}) and S_H = d^2/de^2 of the same, L the model's own (mean) CTC training loss:
    the coefficients of a degree-4 polynomial fitted to L at 9 points (robust to float32 rounding)."""
    model = _tiny()
    batch = _batch(b=2, t=60, u=5, seed=1)
    s = score_layers(model, [batch], ["gradient", "hessian"], progress=False)
    w = model.config.intermediate_ctc_weight

    def loss_at(i, e):
        hook = model.encoder.layers[i].register_forward_hook(lambda m, args, out: (out[0] + e * args[0], *out[1:]))
        try:
            with torch.no_grad():
                o = model(**batch, sample_chunking=False)
        finally:
            hook.remove()
        return float((1 - w) * o["ctc"] + w * o["inter_ctc"])

    es = np.linspace(-0.1, 0.1, 9)
    for i in range(4):
        c = np.polynomial.polynomial.polyfit(es, [loss_at(i, e) for e in es], 4)
        assert s["gradient"].scores[i] == pytest.approx(c[1], rel=1e-3, abs=1e-4), i
        assert s["hessian"].scores[i] == pytest.approx(2 * c[2], rel=1e-2, abs=1e-3), i


def test_twice_differentiable_ctc_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(4, 30, 7, dtype=torch.float64, requires_grad=True)
    lp = F.log_softmax(x, -1)
    lens, tl = torch.tensor([30, 25, 10, 3]), torch.tensor([6, 3, 5, 4])
    tg = torch.randint(1, 7, (4, 6))
    tg[0, 2] = tg[0, 1]                         # a repeated label needs a blank in between
    tg[1, 3:], tg[2, 5:], tg[3, 4:] = -1, -1, -1  # utterance 3 cannot be aligned: zero_infinity
    ref = F.ctc_loss(lp.transpose(0, 1), tg.clamp(min=0), lens, tl, reduction="sum", zero_infinity=True)
    mine = _ctc_loss_sum_twice_differentiable(lp, lens, tg, tl)
    assert mine.item() == pytest.approx(ref.item(), rel=1e-10)
    g_ref = torch.autograd.grad(ref, x, retain_graph=True)[0]
    g = torch.autograd.grad(mine, x, create_graph=True)[0]
    assert (g - g_ref).abs().max() < 1e-10
    assert g.sum().requires_grad                 # differentiable again


def test_loss_matches_model_forward():
    """The loss the gradient metrics use is the model's own training loss (guards against drift)."""
    model = _tiny()
    batch = _batch()
    o = model(**batch, sample_chunking=False)
    w = model.config.intermediate_ctc_weight
    out, lens, hidden = model.encoder(batch["feats"], batch["feats_lens"], return_hidden=True)
    for twice in (False, True):
        ctc = _loss_sum(model, out, lens, hidden, batch["targets"], batch["target_lens"], "ctc", twice) / 4
        joint = _loss_sum(model, out, lens, hidden, batch["targets"], batch["target_lens"], "joint", twice) / 4
        assert ctc.item() == pytest.approx(((1 - w) * o["ctc"] + w * o["inter_ctc"]).item(), rel=1e-5)
        assert joint.item() == pytest.approx(o["loss"].item(), rel=1e-5)


# ------------------------------------------------------------------------------------------------ streaming
def test_scores_do_not_depend_on_batching():
    model = _tiny()
    batch = _batch()
    whole = score_layers(model, [batch], [*DATA_METRICS, "oracle"], progress=False)
    halves = score_layers(model, _split(batch, [[0, 3], [1, 2]]), [*DATA_METRICS, "oracle"], progress=False)
    ones = score_layers(model, _split(batch, [[0], [1], [2], [3]]) + [None], DATA_METRICS, progress=False)
    assert whole.num_utterances == halves.num_utterances == ones.num_utterances == 4
    for name in DATA_METRICS:
        for other in (halves, ones):
            np.testing.assert_allclose(other[name].scores, whole[name].scores, rtol=2e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(halves["oracle"].scores, whole["oracle"].scores, rtol=1e-5)


def test_padding_is_excluded():
    """Appending zero padding (a longer batch) changes no score."""
    model = _tiny()
    batch = _batch(b=2)
    padded = dict(batch, feats=F.pad(batch["feats"], (0, 0, 0, 40)))
    a = score_layers(model, [batch], DATA_METRICS, progress=False)
    b = score_layers(model, [padded], DATA_METRICS, progress=False)
    for name in DATA_METRICS:
        np.testing.assert_allclose(b[name].scores, a[name].scores, rtol=2e-4, atol=1e-5, err_msg=name)


def test_oracle_needs_reiterable_batches_and_restores_training_mode():
    model = _tiny().train()
    with pytest.raises(ValueError, match="re-iterable"):
        score_layers(model, iter([_batch()]), ["oracle"], progress=False)
    with pytest.raises(ValueError, match="re-iterable"):
        oracle_scores(model, (b for b in [_batch()]), progress=False)
    score_layers(model, [_batch()], ["correlation"], progress=False)
    assert model.training
    with pytest.raises(ValueError, match="no utterances"):
        score_layers(model, [None], ["energy"], progress=False)
    with pytest.raises(ValueError, match="unknown metric"):
        score_layers(model, [_batch()], ["entropy"], progress=False)


# ------------------------------------------------------------------------------------------------ ranks
def test_rank_convention():
    assert rank_layers([3.0, 1.0, 2.0], "higher") == [2, 0, 1]         # low score = unimportant = pruned first
    assert rank_layers([3.0, 1.0, 2.0], "lower") == [0, 2, 1]
    assert rank_layers([-3.0, 1.0, -2.0], "abs") == [2, 0, 1]
    assert rank_layers([1.0, 1.0, 1.0], "higher") == [2, 1, 0]         # ties: the later layer goes first
    assert rank_layers([1.0, math.nan, 0.0], "higher") == [2, 0, 1]    # NaN counts as least important
    ms = MetricScores([0.9, 0.2, 0.5], "higher")
    assert ms.ranks == [2, 0, 1] and ms.order == [1, 2, 0]


def test_select_layers_to_remove():
    s = LayerScores(5, {"energy": MetricScores([5.0, 1.0, 4.0, 2.0, 3.0], "higher")}, list(range(5)))
    assert select_layers_to_remove(s, "energy", remove=2) == [1, 3]
    assert select_layers_to_remove(s, "energy", keep=4) == [1]
    assert select_layers_to_remove(s, "energy", ratio=0.4) == [1, 3]
    assert select_layers_to_remove(s, "energy", remove=0) == []
    assert select_layers_to_remove(s, "last", remove=2) == [3, 4]
    r1 = select_layers_to_remove(s, "random", remove=2, seed=1)
    assert r1 == select_layers_to_remove(s, "random", remove=2, seed=1) and len(r1) == 2
    for kw in ({}, {"remove": 1, "keep": 2}, {"remove": 5}, {"keep": 0}, {"ratio": 1.0}, {"remove": -1}):
        with pytest.raises(ValueError):
            select_layers_to_remove(s, "energy", **kw)
    with pytest.raises(KeyError, match="correlation"):
        select_layers_to_remove(s, "correlation", remove=1)


def test_kendall_agreement():
    s = LayerScores(4, {"a": MetricScores([1, 2, 3, 4], "higher"), "b": MetricScores([4, 3, 2, 1], "lower"),
                        "c": MetricScores([4, 3, 2, 1], "higher")})
    assert kendall_tau(s["a"].ranks, s["b"].ranks) == pytest.approx(1.0)
    table = kendall_agreement(s)
    assert table["a"]["c"] == pytest.approx(-1.0) and "a" not in table["a"]
    assert kendall_agreement(s, reference="a") == pytest.approx({"b": 1.0, "c": -1.0})
    assert kendall_tau([0], [0]) is None


def test_layer_scores_json_roundtrip(tmp_path):
    model = _tiny()
    s = score_layers(model, [_batch(b=2)], ["correlation", "energy", "oracle", "last", "random"], progress=False,
                     seed=3)
    d = s.to_json()
    json.dumps(d)
    assert d["layers"] == 4 and set(d["metrics"]) == {"correlation", "energy", "oracle", "last", "random"}
    assert set(d["oracle_agreement"]) == {"correlation", "energy", "last", "random"}
    assert d["agreement"]["correlation"]["energy"] == kendall_tau(s["correlation"].ranks, s["energy"].ranks)
    back = LayerScores.load(s.save(tmp_path / "s.json"))
    assert back.num_layers == 4 and back.original_layers == [0, 1, 2, 3]
    for name, ms in s.metrics.items():
        assert back[name].scores == ms.scores and back[name].ranks == ms.ranks
        assert back[name].importance == ms.importance
    assert back.info["random_seed"] == 3
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ValueError, match="bad.json"):
        LayerScores.load(tmp_path / "bad.json")
    plot = plot_scores(s, tmp_path / "s.png", remove=1)
    assert plot.stat().st_size > 1000


# ------------------------------------------------------------------------------------------------ pruning
def test_oneshot_pruned_model_streams_and_reloads(tmp_path):
    model = _tiny()
    model.set_cmvn(torch.randn(80) * 0.1, 1.0 + 0.1 * torch.rand(80))
    s = score_layers(model, [_batch(b=2)], ["correlation"], progress=False)
    pruned = oneshot_prune(model, s, "correlation", remove=2)
    kept = [i for i in range(4) if i not in s["correlation"].order[:2]]
    assert len(pruned.encoder.layers) == 2 and list(pruned.config.original_layers) == kept
    assert len(model.encoder.layers) == 4                               # the input model is untouched
    x = torch.randn(1, 90, 80)
    with torch.no_grad():
        st = pruned.stream_log_probs(x, 4, 2)
        off = pruned.ctc_log_probs(x, None, 4, 2)[0]
    assert st.shape == off.shape and (st - off).abs().max().item() <= 1e-4
    back = load_model(pruned.save(tmp_path / "p.pt"))
    assert back.config.original_layers == pruned.config.original_layers
    # scores of the pruned model refer to its own layers; pruning again keeps original indices
    s2 = score_layers(back, [_batch(b=2)], ["energy"], progress=False)
    assert s2.original_layers == kept
    again = oneshot_prune(back, s2, "energy", remove=1)
    assert list(again.config.original_layers) == [kept[i] for i in range(2) if i != s2["energy"].order[0]]
    with pytest.raises(ValueError, match="2-layer"):
        oneshot_prune(model, s2, "energy", remove=1)
    assert oneshot_prune(model, None, "last", keep=3).config.original_layers == (0, 1, 2)
    with pytest.raises(ValueError, match="needs scores"):
        oneshot_prune(model, None, "energy", remove=1)


def test_consistency_tracker_remaps_indices(tmp_path):
    t = ConsistencyTracker("energy", every_m=2, remove_n=2, target_layers=3)   # energy: higher = important
    t.add_epoch([5, 1, 6, 7, 2, 8])
    assert t.layers_to_remove() == []                                     # only 1 of 2 epochs so far
    t.add_epoch([5, 4, 6, 7, 0.5, 8])                                     # mean: layer 4 (1.25) < 0 ... < 1 (2.5)
    assert t.consistency() == pytest.approx([5, 2.5, 6, 7, 1.25, 8])
    assert t.layers_to_remove() == [1, 4]
    assert t.current_layers == [0, 2, 3, 5] and t.layers_to_remove() == []
    with pytest.raises(ValueError, match="6 scores"):
        t.add_epoch([1, 2, 3, 4, 5, 6])
    t.add_epoch([9, 1, 5, 3])                                             # original layers 0, 2, 3, 5
    t.add_epoch([9, 5, 5, 1])
    # means: 0 -> 9, 2 -> 3, 3 -> 5, 5 -> 2: original layer 5 (current index 3); only 1 more to reach 3
    assert t.layers_to_remove() == [3]
    assert t.current_layers == [0, 2, 3] and t.done
    t.add_epoch([1, 2, 3])
    t.add_epoch([1, 2, 3])
    assert t.layers_to_remove() == []
    assert [r["layers"] for r in t.removals] == [[1, 4], [5]]
    back = ConsistencyTracker.from_json(json.loads(json.dumps(t.to_json())))
    assert back.current_layers == t.current_layers and back.history == t.history and back.done
    assert plot_score_history(t, tmp_path / "hist.png").stat().st_size > 1000


def test_consistency_tracker_with_layer_scores():
    """LayerScores carry the original layer ids (checked) and the orientation; abs metrics average |S|."""
    model = _tiny()
    pruned = remove_layers(model, [1])
    t = ConsistencyTracker("gradient", every_m=1, remove_n=1, target_layers=2)
    s = LayerScores(3, {"gradient": MetricScores([-3.0, 0.5, 2.0], "abs")}, list(pruned.config.original_layers))
    t.add_epoch(s)
    assert t.layers_to_remove() == [1] and t.current_layers == [0, 3]
    with pytest.raises(ValueError, match="original layers"):
        t.add_epoch(LayerScores(2, {"gradient": MetricScores([1.0, 2.0], "abs")}, [0, 2]))
    t2 = ConsistencyTracker("gradient", every_m=2, remove_n=1, target_layers=1)
    t2.add_epoch([-3.0, 1.0])
    t2.add_epoch([3.0, 1.5])
    assert t2.consistency() == pytest.approx([3.0, 1.25]) and t2.layers_to_remove() == [1]
