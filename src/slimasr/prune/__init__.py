"""Layer pruning: importance metrics, one-shot and iterative removal."""
from .metrics import (BASELINES, DATA_METRICS, IMPORTANCE, METRICS, LayerScores, MetricScores, baseline_scores,
                      kendall_agreement, kendall_tau, oneshot_prune, oracle_scores, plot_scores, rank_layers,
                      score_layers, select_layers_to_remove)
from .distill import DistillLoss, cosine_distill_loss, distill
from .iterative import IterativePruner, iterative_prune
from .plots import plot_layer_scores, plot_score_history
from .schedule import ConsistencyTracker
from .surgery import remap_intermediate_positions, remove_layers

__all__ = ["remove_layers", "remap_intermediate_positions", "score_layers", "oracle_scores", "baseline_scores",
           "LayerScores", "MetricScores", "rank_layers", "kendall_tau", "kendall_agreement",
           "select_layers_to_remove", "oneshot_prune", "plot_scores", "plot_layer_scores", "plot_score_history",
           "ConsistencyTracker", "IterativePruner", "iterative_prune", "DistillLoss", "cosine_distill_loss", "distill",
           "METRICS", "DATA_METRICS", "BASELINES", "IMPORTANCE"]
