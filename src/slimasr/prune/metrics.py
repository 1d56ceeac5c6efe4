"""Layer-importance metrics (Bekal et al., Interspeech 2023, section 3.1), the removal oracle, rank agreement and
one-shot pruning (section 3.2).

Notation: ``X^{i-1}`` is the input of encoder layer ``i`` (0-based here) and ``X^i`` its output, both ``(B, T', D)``
encoder frames (the paper writes ``(B, D, T)``; only the layout differs). They are the ``hidden`` states of
``ConformerEncoder.forward(..., return_hidden=True)``: ``hidden[i]`` is the input and ``hidden[i + 1]`` the output
of layer ``i``. Padding frames (beyond the encoder output lengths) are excluded from every metric. Every metric is
a sum of per-utterance terms divided by the number of utterances, accumulated batch by batch: memory does not
depend on the size of the dev set and the result does not depend on how the dev set is cut into batches.

Metrics (``METRICS``; the orientation of each is in ``IMPORTANCE``):

``correlation`` (default variant, normalised)
    Mean cosine similarity between a layer's output and input frames,
    ``1/B sum_b 1/T_b sum_t cos(X^i_{b,t}, X^{i-1}_{b,t})``. High = the layer changes little = unimportant.
    ``1 - correlation`` is the "block influence" of ShortGPT (Men et al., 2024) and NVIDIA's Minitron depth pruning.
``correlation_raw``
    Eq. 2 as printed: the mean element-wise product ``1/B sum_b 1/(T_b D) sum vec(X^i_b) * vec(X^{i-1}_b)``.
    Per frame it is ``cos * rms(input) * rms(output)``: it scales with activation magnitude. In pre-norm residual
    stacks the residual stream grows with depth, so the raw score grows with depth whatever the layer does and
    drifts towards the "drop the last layers" order. This Conformer ends every block with a LayerNorm, so the
    magnitudes are set by the learned gains of the blocks' final LayerNorms (and, for layer 0, by the front-end's
    sqrt(d) scaling) -- still a per-layer scale that has nothing to do with how much the layer changes its input.
    The cosine is scale-free, bounded, exactly 1 for an identity layer and comparable across models; that is why
    it is the default.
``energy``
    Eq. 3 on the layer output: ``1/(D T_b) sum_d |lambda_d - tr(X_b^T X_b)|`` with ``lambda_d`` the eigenvalues of
    the ``D x D`` Gram matrix, averaged over utterances (eq. 3 sums over ``b``; dividing by the number of
    utterances does not change the ranking). High = important. Since the eigenvalues are non-negative and sum to
    the trace, each term is ``tr - lambda_d`` and the score equals ``(D - 1)/D * ||X_b||_F^2 / T_b``: the mean
    squared activation. We still compute it from the eigenvalues as eq. 3 states.
``gradient`` / ``hessian``
    Eq. 4 with k = 1 and k = 2 (see ``_gradient_scores`` for our reading). Higher absolute value = important.
``taylor`` (beyond the paper)
    ``1/B sum_b vec(X^{i-1}_b - X^i_b) . grad_{X^i} L``: the first-order estimate of the loss change when layer
    ``i`` is removed (its successor then receives ``X^{i-1}`` instead of ``X^i``). High = important.
``oracle`` / ``oracle_wer`` (beyond the paper)
    The dev loss (and greedy-CTC WER, when the model has a tokenizer) of the model with layer ``i`` removed. High
    = important. Costs one pass over the dev set per layer.
``last`` / ``random``
    Baselines that need no data: prune the last layers first; prune in a seeded random order.

Ranking convention: ``ranks[i]`` is the position of layer ``i`` in the order "least important first" (0 = prune
first); ``scores`` are stored as computed and ``importance`` says how to read them: ``"higher"`` (a higher score
means more important), ``"lower"`` or ``"abs"`` (a higher absolute value means more important). Ties are broken
towards pruning the later layer first.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random as _random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F

from ..decoding import greedy_transcripts
from ..model.asr import ASRModel
from .surgery import remove_layers

__all__ = ["METRICS", "DATA_METRICS", "BASELINES", "IMPORTANCE", "LayerScores", "MetricScores", "score_layers",
           "oracle_scores", "baseline_scores", "rank_layers", "kendall_tau", "kendall_agreement",
           "select_layers_to_remove", "oneshot_prune", "plot_scores"]

log = logging.getLogger(__name__)

# a higher score means: "higher" more important, "lower" less important, "abs" more important in absolute value
IMPORTANCE: dict[str, str] = {
    "correlation": "lower",
    "correlation_raw": "lower",
    "energy": "higher",
    "gradient": "abs",
    "hessian": "abs",
    "taylor": "higher",
    "oracle": "higher",
    "oracle_wer": "higher",
    "last": "lower",
    "random": "higher",
}
FORWARD_METRICS = ("correlation", "correlation_raw", "energy")
GRADIENT_METRICS = ("gradient", "hessian", "taylor")
DATA_METRICS = FORWARD_METRICS + GRADIENT_METRICS + ("oracle",)
BASELINES = ("last", "random")
METRICS = DATA_METRICS + ("oracle_wer",) + BASELINES
LOSSES = ("ctc", "joint")
_EPS = 1e-12


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class MetricScores:
    """One metric's per-layer scores (as computed), their orientation and the derived ranks."""

    scores: list[float]
    importance: str                       # "higher" | "lower" | "abs"
    ranks: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.importance not in ("higher", "lower", "abs"):
            raise ValueError(f"importance must be 'higher', 'lower' or 'abs', got {self.importance!r}")
        self.scores = [float(s) for s in self.scores]
        if not self.ranks:
            self.ranks = rank_layers(self.scores, self.importance)
        elif sorted(self.ranks) != list(range(len(self.scores))):
            raise ValueError(f"ranks must be a permutation of 0..{len(self.scores) - 1}, got {self.ranks}")

    @property
    def order(self) -> list[int]:
        """Layer indices, least important (pruned first) first."""
        return sorted(range(len(self.ranks)), key=lambda i: self.ranks[i])


@dataclass
class LayerScores:
    """Scores of every layer of one model under several metrics.

    Attributes:
        num_layers: layers of the scored model.
        metrics: metric name -> :class:`MetricScores`.
        original_layers: for each scored layer, its index in the original (unpruned) stack.
        num_utterances: dev utterances the data metrics were computed on (0 for baselines only).
        info: settings and side results (loss kind, chunking, the full model's oracle loss / WER, ...).
    """

    num_layers: int
    metrics: dict[str, MetricScores] = field(default_factory=dict)
    original_layers: list[int] | None = None
    num_utterances: int = 0
    info: dict = field(default_factory=dict)

    def __getitem__(self, metric: str) -> MetricScores:
        if metric not in self.metrics:
            raise KeyError(f"no {metric!r} scores (have: {', '.join(self.metrics) or 'none'})")
        return self.metrics[metric]

    def __contains__(self, metric: str) -> bool:
        return metric in self.metrics

    def merge(self, other: "LayerScores") -> "LayerScores":
        """A copy with ``other``'s metrics and info added (both must describe the same layers)."""
        if other.num_layers != self.num_layers or (
                self.original_layers and other.original_layers and self.original_layers != other.original_layers):
            raise ValueError("cannot merge scores of different layer stacks")
        return LayerScores(self.num_layers, {**self.metrics, **other.metrics},
                           self.original_layers or other.original_layers,
                           max(self.num_utterances, other.num_utterances), {**self.info, **other.info})

    def agreement(self) -> dict[str, dict[str, float | None]]:
        """Pairwise Kendall tau between the rankings of all metrics."""
        return kendall_agreement(self)

    def to_json(self) -> dict:
        """A JSON-serialisable dict (``layers``, ``metrics``, agreement tables, ...)."""
        d = {
            "layers": self.num_layers,
            "original_layers": self.original_layers,
            "num_utterances": self.num_utterances,
            "metrics": {k: {"scores": [_json_float(s) for s in m.scores], "ranks": list(m.ranks),
                            "importance": m.importance, "prune_order": m.order}
                        for k, m in self.metrics.items()},
            "agreement": self.agreement(),
            "info": self.info,
        }
        for ref in ("oracle", "oracle_wer"):
            if ref in self.metrics:
                d[f"{ref}_agreement"] = kendall_agreement(self, reference=ref)
        return d

    @classmethod
    def from_json(cls, data: "dict | str") -> "LayerScores":
        """Inverse of :meth:`to_json` (a dict or its JSON text); agreement tables are recomputed, not read."""
        if isinstance(data, str):
            data = json.loads(data)
        try:
            n = int(data["layers"])
            metrics = {}
            for k, m in data["metrics"].items():
                scores = [math.nan if s is None else float(s) for s in m["scores"]]
                if len(scores) != n or len(m["ranks"]) != n:
                    raise ValueError(f"metric {k!r} has {len(scores)} scores for {n} layers")
                metrics[k] = MetricScores(scores, m.get("importance", IMPORTANCE.get(k, "higher")),
                                          [int(r) for r in m["ranks"]])
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a layer-scores document (missing or malformed {e})") from None
        orig = data.get("original_layers")
        return cls(n, metrics, [int(i) for i in orig] if orig is not None else None,
                   int(data.get("num_utterances", 0)), dict(data.get("info", {})))

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LayerScores":
        path = Path(path)
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x


# ---------------------------------------------------------------------------------------------------------------
# Ranking and agreement
# ---------------------------------------------------------------------------------------------------------------
def rank_layers(scores: Sequence[float], importance: str) -> list[int]:
    """``ranks[i]`` = position of layer ``i`` in the order "least important first"; ties prune the later layer first.

    NaN scores count as least important.
    """
    def key(i: int):
        s = float(scores[i])
        if math.isnan(s):
            return (0, 0.0, -i)
        v = s if importance == "higher" else -s if importance == "lower" else abs(s)
        return (1, v, -i)

    order = sorted(range(len(scores)), key=key)
    ranks = [0] * len(scores)
    for pos, i in enumerate(order):
        ranks[i] = pos
    return ranks


def kendall_tau(ranks_a: Sequence[int], ranks_b: Sequence[int]) -> float | None:
    """Kendall's tau-b between two rankings of the same layers (None when undefined, e.g. one layer)."""
    from scipy.stats import kendalltau

    if len(ranks_a) != len(ranks_b):
        raise ValueError(f"rankings of different lengths: {len(ranks_a)} and {len(ranks_b)}")
    if len(ranks_a) < 2:
        return None
    tau = kendalltau(list(ranks_a), list(ranks_b)).statistic
    return None if tau is None or math.isnan(tau) else float(tau)


def kendall_agreement(scores: LayerScores, reference: str | None = None,
                      metrics: Sequence[str] | None = None) -> dict:
    """Rank agreement (Kendall tau) between metrics.

    Returns ``{a: {b: tau}}`` for every pair of ``metrics`` (default: all in ``scores``) without ``reference``;
    with it, ``{a: tau(a, reference)}`` for every other metric.
    """
    names = list(metrics) if metrics is not None else list(scores.metrics)
    if reference is not None:
        ref = scores[reference].ranks
        return {m: kendall_tau(scores[m].ranks, ref) for m in names if m != reference}
    return {a: {b: kendall_tau(scores[a].ranks, scores[b].ranks) for b in names if b != a} for a in names}


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------
def _original_layers(model: ASRModel) -> list[int]:
    cfg = model.config
    n = len(model.encoder.layers)
    return list(cfg.original_layers) if cfg.original_layers is not None else list(range(n))


def _expand_metrics(metrics: "str | Iterable[str]") -> list[str]:
    if isinstance(metrics, str):
        metrics = [metrics]
    out: list[str] = []
    for m in metrics:
        names = list(DATA_METRICS + BASELINES) if m == "all" else [m]
        for name in names:
            if name == "oracle_wer":
                name = "oracle"
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)} or 'all'")
            if name not in out:
                out.append(name)
    if not out:
        raise ValueError("no metric requested")
    return out


def _model_device(model: ASRModel) -> torch.device:
    return next(model.parameters()).device


def _limited(batches: Iterable, max_batches: int | None):
    return batches if max_batches is None else islice(batches, max_batches)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _check_batch(batch) -> None:
    if not isinstance(batch, dict) or not {"feats", "feats_lens", "targets", "target_lens"} <= set(batch):
        raise ValueError("each batch must be a dict with feats, feats_lens, targets and target_lens "
                         f"(the output of slimasr.data.collate), got {type(batch).__name__}")


def _ctc_loss_sum_twice_differentiable(log_probs: torch.Tensor, lens: torch.Tensor, targets: torch.Tensor,
                                       target_lens: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """Summed CTC loss by the forward algorithm in plain torch ops, so that it has second derivatives (torch's
    ``ctc_loss`` backward is not differentiable). Same value as ``F.ctc_loss(..., reduction="sum",
    zero_infinity=True)``.

    log_probs: (B, T, V); lens: (B,); targets: (B, U) padded with anything < 0; target_lens: (B,).
    """
    b, t_max, _ = log_probs.shape
    u = targets.size(1)
    s = 2 * u + 1
    dev = log_probs.device
    neg = torch.tensor(-1e30, dtype=log_probs.dtype, device=dev)      # finite "log 0": keeps gradients finite
    ext = torch.full((b, s), blank, dtype=torch.long, device=dev)     # blank y1 blank y2 ... blank
    ext[:, 1::2] = targets.clamp(min=0)
    # a skip from s - 2 is allowed into a label that differs from the label two positions back
    skip = torch.zeros(b, s, dtype=torch.bool, device=dev)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    valid_s = torch.arange(s, device=dev)[None, :] < (2 * target_lens + 1)[:, None]
    lp = log_probs.gather(2, ext[:, None, :].expand(b, t_max, s))      # (B, T, S)
    alpha = torch.where(torch.arange(s, device=dev)[None, :] < 2, lp[:, 0], neg)
    alpha = torch.where(valid_s, alpha, neg)
    for t in range(1, t_max):
        a1 = torch.cat((neg.expand(b, 1), alpha[:, :-1]), dim=1)
        a2 = torch.where(skip, torch.cat((neg.expand(b, 2), alpha[:, :-2]), dim=1), neg)
        new = torch.logsumexp(torch.stack((alpha, a1, a2)), dim=0) + lp[:, t]
        new = torch.where(valid_s, new, neg)
        alpha = torch.where((t < lens)[:, None], new, alpha)
    last = (2 * target_lens).clamp(max=s - 1)
    end = torch.stack((alpha.gather(1, last[:, None])[:, 0],
                       alpha.gather(1, (last - 1).clamp(min=0)[:, None])[:, 0]
                       .masked_fill(target_lens == 0, neg)))
    loss = -torch.logsumexp(end, dim=0)                                # (B,)
    return torch.where(loss > 1e29, torch.zeros_like(loss), loss).sum()


def _ctc_part(model: ASRModel, enc, lens, targets, target_lens, twice: bool) -> torch.Tensor:
    """``ASRModel._ctc_loss`` (a mean over the batch), optionally twice differentiable."""
    if not twice:
        return model._ctc_loss(enc, lens, targets, target_lens)
    lp = F.log_softmax(model.ctc(enc).float(), dim=-1)
    return _ctc_loss_sum_twice_differentiable(lp, lens, targets, target_lens, model.config.blank_id) / targets.size(0)


def _loss_sum(model: ASRModel, out, lens, hidden, targets, target_lens, kind: str,
              twice_differentiable: bool = False) -> torch.Tensor:
    """The training loss summed over the utterances of a batch, from the encoder's outputs.

    ``ctc``: CTC with intermediate CTC combined as in ``ASRModel.forward`` -- exactly a sum of per-utterance terms.
    ``joint``: the whole joint CTC/attention loss times the batch size (its attention part is a mean over the
    batch's tokens, so it is only approximately a per-utterance sum).
    """
    cfg = model.config
    b = targets.size(0)
    ctc = _ctc_part(model, out, lens, targets, target_lens, twice_differentiable)
    if cfg.intermediate_ctc_layers:
        inter = torch.stack([_ctc_part(model, model.encoder.after_norm(hidden[p]), lens, targets, target_lens,
                                       twice_differentiable)
                             for p in cfg.intermediate_ctc_layers]).mean()
        w = cfg.intermediate_ctc_weight
        ctc = (1 - w) * ctc + w * inter
    loss = ctc
    if kind == "joint" and model.decoder is not None and cfg.ctc_weight < 1.0:
        from ..model.decoder import attention_loss

        att = attention_loss(model.decoder, out, lens, targets, target_lens, cfg.sos_eos_id, cfg.label_smoothing)
        loss = cfg.ctc_weight * ctc + (1 - cfg.ctc_weight) * att
    return loss * b


def _twice_differentiable_attention(enabled: bool):
    """Within it, ``scaled_dot_product_attention`` (the attention decoder) uses its plain-ops implementation, whose
    backward can be differentiated again (the fused kernels' cannot)."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _encode(model: ASRModel, batch: dict, chunk_size, left_chunks, need_hidden: bool):
    return model.encoder(batch["feats"], batch["feats_lens"], chunk_size, left_chunks,
                         return_hidden=need_hidden or bool(model.config.intermediate_ctc_layers))


# ---------------------------------------------------------------------------------------------------------------
# Per-batch metric terms: each returns (L,) float64 sums over the batch's utterances
# ---------------------------------------------------------------------------------------------------------------
def _forward_scores(hidden: list[torch.Tensor], mask: torch.Tensor, metrics: Sequence[str]) -> dict[str, torch.Tensor]:
    """Correlation (cosine and raw) and energy sums over the utterances of a batch.

    hidden: L + 1 tensors (B, T', D); mask: (B, T') bool, True on real frames.
    """
    m = mask.to(torch.float64)                                          # (B, T')
    frames = m.sum(1).clamp(min=1)                                      # (B,)
    d = hidden[0].size(-1)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in metrics}
    for i in range(len(hidden) - 1):
        x_in = hidden[i].detach().to(torch.float64) * m[..., None]
        x_out = hidden[i + 1].detach().to(torch.float64) * m[..., None]
        if "correlation" in metrics:
            cos = F.cosine_similarity(x_out, x_in, dim=-1, eps=_EPS)    # (B, T')
            out["correlation"].append(((cos * m).sum(1) / frames).sum())
        if "correlation_raw" in metrics:
            out["correlation_raw"].append(((x_out * x_in).sum((1, 2)) / (frames * d)).sum())
        if "energy" in metrics:
            gram = x_out.transpose(1, 2) @ x_out                         # (B, D, D) = X_b X_b^T in the paper
            lam = torch.linalg.eigvalsh(gram)                            # (B, D)
            tr = gram.diagonal(dim1=1, dim2=2).sum(-1, keepdim=True)     # (B, 1)
            out["energy"].append(((lam - tr).abs().sum(1) / (d * frames)).sum())
    return {k: torch.stack(v) for k, v in out.items()}


def _gradient_scores(loss_sum: torch.Tensor, hidden: list[torch.Tensor], mask: torch.Tensor,
                     metrics: Sequence[str]) -> dict[str, torch.Tensor]:
    """Eq. 4 (k = 1, 2) and the Taylor estimate, summed over the utterances of a batch.

    Our reading of eq. 4, ``S = 1/B sum_b vec(X^{i-1}_b) . grad^k_{X^i} vec(X^i_b)``: the k-th derivative of the
    training loss ``L`` with respect to the layer output ``X^i``, contracted k times with the layer input
    ``v = X^{i-1}``, i.e. the k-th directional derivative of the loss along the input direction,
    ``S_k = d^k/de^k L(X^i + e X^{i-1}) at e = 0``, averaged over utterances:

    * ``S_G = v . grad_{X^i} L``                    (k = 1: one backward pass),
    * ``S_H = v . (H_{X^i} v)``, ``H = d^2 L / dX^i^2`` (k = 2: a Hessian-vector product by double backward).

    ``L`` is the sum of per-utterance losses, so utterance ``b``'s term only involves its own loss. The derivatives
    are taken with respect to activations, not parameters: eq. 4 contracts with ``X^{i-1}``, which has the shape
    of the layer's output, not of its weights. A large ``|S|`` means the loss is sensitive to this layer's output
    along the direction its input already points to (the residual path): the layer matters.
    """
    outs = hidden[1:]
    m = mask.to(outs[0].dtype)[..., None]                               # (B, T', 1)
    need_h = "hessian" in metrics
    grads = torch.autograd.grad(loss_sum, outs, create_graph=need_h, retain_graph=need_h)
    res: dict[str, list[torch.Tensor]] = {k: [] for k in metrics}
    for i, (x_out, g) in enumerate(zip(outs, grads)):
        v = hidden[i].detach() * m                                       # layer input, padding zeroed
        if "gradient" in metrics:
            res["gradient"].append((v * g.detach()).to(torch.float64).sum())
        if "taylor" in metrics:
            delta = (hidden[i].detach() - x_out.detach()) * m
            res["taylor"].append((delta * g.detach()).to(torch.float64).sum())
        if need_h:
            hv = torch.autograd.grad((g * v).sum(), x_out, retain_graph=i < len(outs) - 1, allow_unused=True)[0]
            res["hessian"].append((v * hv).to(torch.float64).sum() if hv is not None
                                  else torch.zeros((), dtype=torch.float64, device=v.device))
    return {k: torch.stack(v).detach() for k, v in res.items()}


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------
def baseline_scores(num_layers: int, metric: str, seed: int = 0) -> MetricScores:
    """Data-free baselines: ``last`` (scores = layer index, prune the last layers first) or ``random`` (seeded)."""
    if metric == "last":
        return MetricScores([float(i) for i in range(num_layers)], IMPORTANCE["last"])
    if metric == "random":
        rng = _random.Random(seed)
        return MetricScores([rng.random() for _ in range(num_layers)], IMPORTANCE["random"])
    raise ValueError(f"unknown baseline {metric!r}; choose from {', '.join(BASELINES)}")


def score_layers(model: ASRModel, batches: Iterable, metrics: "str | Sequence[str]" = (
                     "correlation", "energy", "gradient", "hessian"),
                 device: "str | torch.device | None" = None, progress: bool = True, *,
                 max_batches: int | None = None, loss: str = "ctc", chunk_size: int | None = None,
                 left_chunks: int | None = None, tokenizer=None, seed: int = 0) -> LayerScores:
    """Score every encoder layer of ``model`` on dev batches.

    Args:
        model: the model to score (put in eval mode while scoring; its training flag is restored).
        batches: an iterable of ``collate`` dicts (``feats`` (B, T, F), ``feats_lens``, ``targets`` (B, U) padded
            with -1, ``target_lens``); ``None`` items are skipped. ``oracle`` iterates it once per layer, so it
            must then be re-iterable (a DataLoader or a list), not an iterator.
        metrics: names from :data:`METRICS` (``"all"`` = every data metric and both baselines). ``oracle`` also
            gives ``oracle_wer`` when a tokenizer is available.
        device: where to compute (the model is moved there); default: the model's device.
        progress: show tqdm progress bars.
        max_batches: use only the first N batches.
        loss: ``"ctc"`` (CTC + intermediate CTC, the part of the training loss inference depends on; a sum of
            per-utterance terms, so scores do not depend on batching) or ``"joint"`` (with the attention loss).
        chunk_size, left_chunks: score under chunk masks (streaming models); default full context.
        tokenizer: for ``oracle_wer``; default the model's attached tokenizer.
        seed: for the ``random`` baseline.
    Returns:
        :class:`LayerScores` with one entry per requested metric.
    """
    names = _expand_metrics(metrics)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    n = len(model.encoder.layers)
    result = LayerScores(n, original_layers=_original_layers(model),
                         info={"loss": loss, "chunk_size": chunk_size, "left_chunks": left_chunks})
    fwd = [m for m in names if m in FORWARD_METRICS]
    grad = [m for m in names if m in GRADIENT_METRICS]
    if "oracle" in names and iter(batches) is batches:
        raise ValueError("the oracle needs re-iterable batches (a DataLoader or a list), got a one-shot iterator")

    if fwd or grad:
        dev = torch.device(device) if device is not None else _model_device(model)
        model.to(dev)
        was_training = model.training
        model.eval()
        sums = {m: torch.zeros(n, dtype=torch.float64) for m in fwd + grad}
        count = skipped = 0        # skipped: utterances collate dropped (unreadable or too short; the dataset names them)
        from tqdm import tqdm

        try:
            for batch in tqdm(_limited(batches, max_batches), desc="scoring layers", unit="batch",
                              disable=not progress):
                if batch is None:
                    continue
                _check_batch(batch)
                skipped += int(batch.get("num_skipped", 0))
                batch = _to_device(batch, dev)
                with torch.set_grad_enabled(bool(grad)), _twice_differentiable_attention("hessian" in grad):
                    out, lens, hidden = _encode(model, batch, chunk_size, left_chunks, need_hidden=True)
                    mask = torch.arange(out.size(1), device=dev)[None, :] < lens[:, None]     # (B, T')
                    if fwd:
                        for k, v in _forward_scores(hidden, mask, fwd).items():
                            sums[k] += v.cpu()
                    if grad:
                        total = _loss_sum(model, out, lens, hidden, batch["targets"], batch["target_lens"], loss,
                                          twice_differentiable="hessian" in grad)
                        for k, v in _gradient_scores(total, hidden, mask, grad).items():
                            sums[k] += v.cpu()
                count += int(batch["feats"].size(0))
        finally:
            model.train(was_training)
        if count == 0:
            raise ValueError("no utterances to score (the batches were empty or all unreadable)")
        result.num_utterances = count
        result.info["skipped_utterances"] = skipped
        for k in fwd + grad:
            result.metrics[k] = MetricScores((sums[k] / count).tolist(), IMPORTANCE[k])

    if "oracle" in names:
        orc = oracle_scores(model, batches, device=device, progress=progress, max_batches=max_batches, loss=loss,
                            chunk_size=chunk_size, left_chunks=left_chunks, tokenizer=tokenizer)
        result = result.merge(orc)
    for b in BASELINES:
        if b in names:
            result.metrics[b] = baseline_scores(n, b, seed)
            if b == "random":
                result.info["random_seed"] = seed
    order = [x for k in names for x in ((k, "oracle_wer") if k == "oracle" else (k,))]
    result.metrics = {k: result.metrics[k] for k in order if k in result.metrics}
    return result


# ---------------------------------------------------------------------------------------------------------------
# The oracle: remove each layer and measure
# ---------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def _evaluate(model: ASRModel, batches: Iterable, dev, loss: str, chunk_size, left_chunks, tokenizer,
              max_batches, progress: bool, desc: str) -> tuple[float, float | None, int]:
    """Mean per-utterance loss, greedy WER (None without tokenizer) and utterance count over the batches."""
    from tqdm import tqdm

    from ..scoring import ErrorCounts, error_counts

    total, count, counts = 0.0, 0, ErrorCounts()
    for batch in tqdm(_limited(batches, max_batches), desc=desc, unit="batch", disable=not progress, leave=False):
        if batch is None:
            continue
        _check_batch(batch)
        batch = _to_device(batch, dev)
        out, lens, hidden = _encode(model, batch, chunk_size, left_chunks, need_hidden=False)
        total += float(_loss_sum(model, out, lens, hidden, batch["targets"], batch["target_lens"], loss))
        count += int(batch["feats"].size(0))
        if tokenizer is not None:
            refs, hyps = greedy_transcripts(F.log_softmax(model.ctc(out), dim=-1), lens, batch["targets"].cpu(),
                                            batch["target_lens"].cpu(), tokenizer, model.config.blank_id)
            counts = counts + error_counts(refs, hyps)
    if count == 0:
        raise ValueError("no utterances to score (the batches were empty or all unreadable)")
    wer = counts.wer if tokenizer is not None else None
    return total / count, wer, count


def oracle_scores(model: ASRModel, batches: Iterable, device: "str | torch.device | None" = None,
                  progress: bool = True, *, max_batches: int | None = None, loss: str = "ctc",
                  chunk_size: int | None = None, left_chunks: int | None = None, tokenizer=None) -> LayerScores:
    """The removal oracle: dev loss (and greedy-CTC WER) of the model with each single layer removed.

    ``oracle`` scores are mean per-utterance losses (``loss`` as in :func:`score_layers`), ``oracle_wer`` scores
    WERs (only when a tokenizer is given or attached to the model); higher = removing the layer hurts more =
    important. ``info`` holds the full model's ``oracle_full_loss`` / ``oracle_full_wer``. ``batches`` is iterated
    ``L + 1`` times, so it must be re-iterable.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if iter(batches) is batches:
        raise ValueError("the oracle needs re-iterable batches (a DataLoader or a list), got a one-shot iterator")
    if tokenizer is None and model.tokenizer_bytes is not None:
        from ..tokenizer import Tokenizer

        tokenizer = Tokenizer.from_bytes(model.tokenizer_bytes)
    dev = torch.device(device) if device is not None else _model_device(model)
    model.to(dev)
    was_training = model.training
    model.eval()
    n = len(model.encoder.layers)
    losses, wers = [], []
    try:
        full_loss, full_wer, count = _evaluate(model, batches, dev, loss, chunk_size, left_chunks, tokenizer,
                                               max_batches, progress, "oracle: full model")
        from tqdm import tqdm

        for i in tqdm(range(n), desc="oracle", unit="layer", disable=not progress):
            pruned = remove_layers(model, [i]).eval() if n > 1 else None
            if pruned is None:
                losses.append(math.nan)
                wers.append(math.nan)
                continue
            lo, we, _ = _evaluate(pruned, batches, dev, loss, chunk_size, left_chunks, tokenizer, max_batches,
                                  progress, f"oracle: without layer {i}")
            del pruned
            losses.append(lo)
            wers.append(we)
    finally:
        model.train(was_training)
    res = LayerScores(n, {"oracle": MetricScores(losses, IMPORTANCE["oracle"])}, _original_layers(model), count,
                      {"loss": loss, "oracle_full_loss": full_loss})
    if tokenizer is not None:
        res.metrics["oracle_wer"] = MetricScores(wers, IMPORTANCE["oracle_wer"])
        res.info["oracle_full_wer"] = full_wer
    return res


# ---------------------------------------------------------------------------------------------------------------
# One-shot pruning
# ---------------------------------------------------------------------------------------------------------------
def _num_to_remove(n: int, remove: int | None, keep: int | None, ratio: float | None) -> int:
    given = [x is not None for x in (remove, keep, ratio)]
    if sum(given) != 1:
        raise ValueError("give exactly one of remove (layers to remove), keep (layers to keep) or ratio "
                         "(fraction of layers to remove)")
    if remove is not None:
        k = int(remove)
        what = f"remove={remove}"
    elif keep is not None:
        k = n - int(keep)
        what = f"keep={keep}"
    else:
        if not 0.0 <= float(ratio) < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {ratio}")
        k = int(round(float(ratio) * n))
        what = f"ratio={ratio}"
    if not 0 <= k < n:
        raise ValueError(f"{what} would remove {k} of {n} layers; at least one layer must stay and none can be "
                         "added")
    return k


def select_layers_to_remove(scores: LayerScores, metric: str, remove: int | None = None, keep: int | None = None,
                            ratio: float | None = None, seed: int = 0) -> list[int]:
    """The ``remove`` (or ``n - keep``, or ``round(ratio * n)``) least important layers by ``metric``.

    Returns sorted 0-based indices into the scored model's current stack. The baselines ``last`` and ``random``
    (with ``seed``) need no entry in ``scores``.
    """
    n = scores.num_layers
    k = _num_to_remove(n, remove, keep, ratio)
    if metric in BASELINES and metric not in scores:
        ms = baseline_scores(n, metric, seed)
    else:
        ms = scores[metric]
    return sorted(ms.order[:k])


def oneshot_prune(model: ASRModel, scores: LayerScores | None, metric: str, remove: int | None = None,
                  keep: int | None = None, ratio: float | None = None, seed: int = 0) -> ASRModel:
    """A new model without the least important layers by ``metric`` (``model`` is not modified).

    ``scores`` must come from this model (same layers); it may be None for the ``last`` / ``random`` baselines.
    The result's ``config.original_layers`` lists the original layers it kept.
    """
    n = len(model.encoder.layers)
    if scores is None:
        if metric not in BASELINES:
            raise ValueError(f"metric {metric!r} needs scores (see score_layers); only {', '.join(BASELINES)} "
                             "work without")
        scores = LayerScores(n, original_layers=_original_layers(model))
    if scores.num_layers != n:
        raise ValueError(f"the scores are for a {scores.num_layers}-layer model but the model has {n} layers")
    if scores.original_layers is not None and list(scores.original_layers) != _original_layers(model):
        raise ValueError(f"the scores are for original layers {scores.original_layers} but the model has "
                         f"{_original_layers(model)}")
    drop = select_layers_to_remove(scores, metric, remove=remove, keep=keep, ratio=ratio, seed=seed)
    log.info("one-shot pruning by %s: removing layers %s", metric, drop)
    return remove_layers(model, drop)


def plot_scores(scores: LayerScores, path: str | os.PathLike, metrics: Sequence[str] | None = None,
                remove: int | None = None) -> Path:
    """Bar chart of every metric's scores by layer (one panel per metric); see :func:`slimasr.prune.plots`."""
    from .plots import plot_layer_scores

    return plot_layer_scores(scores, path, metrics=metrics, remove=remove)
