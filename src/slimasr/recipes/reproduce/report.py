"""The report of the reproduction: ``reproduction.md``, ``reproduction.json`` and the figures, from the finished
runs of a work directory (unfinished cells read "pending")."""
from __future__ import annotations

import json
import logging
import math
import os
import statistics
from pathlib import Path

from .budget import BUDGETS, Budget, _device_kind
from .plan import BASELINE_METHODS, CHUNK, ONESHOT_METRICS, ExperimentSpec, _removed
from .runs import _load_results, _read_json, _write_json

__all__ = ["write_report"]

log = logging.getLogger(__name__)

TEACHER_NOTE = ("The embedded default teacher was trained on one GPU for about 9 minutes in two stages "
                "(6.5 + 2.5 minutes, 4585 steps of up to 40000 frames on all of the training set; logs in "
                "`benchmarks/results/default_model/`). That budget cannot be matched on 2 CPU cores.")


def _pct(values: list[float], n_seeds: int) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "pending"
    m = 100 * statistics.fmean(values)
    s = f"{m:.1f}"
    if len(values) > 1:
        s += f" ± {100 * statistics.stdev(values):.1f}"
    if len(values) < n_seeds:
        s += f" ({len(values)}/{n_seeds} seeds)"
    return s


def _cells(results: list[dict], mode: str, groups: list[str], n_seeds: int, key: str = "eval") -> list[str]:
    """WER overall and per voice group of some runs (one per seed): mean ± sd."""
    evs = [r[key][mode] for r in results if mode in r.get(key, {})]
    row = [_pct([e["wer"] for e in evs], n_seeds)]
    row += [_pct([e["by_group"].get(g) for e in evs], n_seeds) for g in groups]
    return row


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def write_report(out: str | os.PathLike, results_dir: str | os.PathLike, plan: list[ExperimentSpec], settings: dict,
                 teacher_is_default: bool = False, figures: bool = True) -> dict:
    """Write ``reproduction.md``, ``reproduction.json`` and (with ``figures``) the figures from what is finished
    under ``out``; without ``figures`` the report links the figure files of an earlier call."""
    from ...prune.metrics import LayerScores, kendall_agreement, select_layers_to_remove

    out, results_dir = Path(out), Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    budget = settings["budget"]
    n = settings["teacher_layers"]
    seeds = sorted({s.seed for s in plan})
    ns = len(seeds)
    by_id = {r["id"]: r for r in _load_results(out)}
    teacher = _read_json(out / "teacher" / "result.json")
    scores = LayerScores.load(out / "teacher" / "scores.json") if (out / "teacher" / "scores.json").is_file() \
        else None
    groups = sorted(teacher["eval"]["offline"]["by_group"]) if teacher else []
    voices = sorted(teacher["eval"]["offline"]["by_voice"]) if teacher else []

    def runs(pred) -> list[dict]:
        return [by_id[s.id] for s in plan if pred(s) and s.id in by_id]

    def teacher_cells(mode="offline") -> list[str]:
        if not teacher:
            return ["pending"] * (1 + len(groups))
        e = teacher["eval"][mode]
        return [f"{100 * e['wer']:.1f}"] + [f"{100 * e['by_group'][g]:.1f}" for g in groups]

    sizes = [(r, n - _removed(n, r)) for r in budget["ratios"]]
    md = ["# Reproduction: metric-driven Conformer layer pruning (Bekal et al., 2023)", ""]
    md += [f"Teacher: {n} layers (`sha256 {settings['teacher_sha256'][:12]}`). Data: {settings['train_hours']:.2f} h "
           f"of training audio; test = held-out voices. Greedy CTC decoding, no LM. WER in %, mean ± sample "
           f"standard deviation over seeds {seeds} (training seed and the seeded 20% data sample); "
           "\"pending\" = not run yet.", ""]
    grp = " / ".join(groups) if groups else "voice groups"
    md += ["## Training budget", ""]
    sc_epochs, sc_frac = Budget.from_dict(budget).scratch_schedule
    same = sc_epochs == budget["epochs"] and sc_frac == budget["train_fraction"]
    md += [f"Budget `{budget['name']}`: every fine-tuning run trains {budget['epochs']} epochs over a seeded "
           f"{budget['train_fraction']:.0%} of the training set (fine-tuning lr {budget['lr']:g}, warm-up "
           f"{budget['warmup_steps']} steps, {budget['max_frames_per_batch']} frames per batch). One-shot pruned "
           "models and the distilled students get the same number of epochs over the same amount of data, so "
           "about the same number of optimizer steps (measured steps below). Iterative runs "
           f"see the same amount of data cut into {budget['epochs'] * budget['iterative_split']} epochs of "
           f"{budget['train_fraction'] / budget['iterative_split']:.0%} "
           f"({'so that the paper’s schedules fit' if budget['iterative_split'] > 1 else 'as in the paper'}). "
           f"Scratch models use the teacher's recipe (lr {budget['scratch_lr']:g}, warm-up "
           f"{budget['scratch_warmup_steps']} steps) from random weights, with the teacher's tokenizer and "
           f"feature normalisation, for {sc_epochs} epochs over {sc_frac:.0%} of the training set"
           f"{' (the fine-tuning budget)' if same else ''}; distilled students start from the scratch model of "
           "their size and train for the fine-tuning budget with the cosine distillation term (weight "
           f"{budget['distill_weight']:g}; a distillation step also runs the teacher and a second student pass). "
           "In the paper the small models were pre-trained like the teacher (the same data and epochs); here "
           "they get " + ("only the fine-tuning budget" if same else f"{sc_epochs} epochs over {sc_frac:.0%}")
           + ", so the scratch baseline (and the students built on it) is weaker than the paper's.", ""]
    if teacher_is_default:
        md += [TEACHER_NOTE, ""]
    done = list(by_id.values())
    if done:
        # minutes only mean something per kind of device: a GPU run and a CPU run differ ten-fold
        def dev(r: dict) -> str:
            return _device_kind((r["train"].get("host") or {}).get("device")) or "unknown"
        rows = []
        for k, d in sorted({(r["kind"], dev(r)) for r in done}):
            rs = [r for r in done if r["kind"] == k and dev(r) == d]
            rows.append([k, d, str(len(rs)), f"{statistics.fmean(r['train']['steps'] for r in rs):.0f}",
                         f"{statistics.fmean(r['train']['seconds'] for r in rs) / 60:.1f}"])
        md += _table(["runs", "device", "finished", "mean steps", "mean minutes"], rows) + [""]
    hosts = sorted({f"{h['cpus']} CPUs ({h['machine']}), {h['torch_threads']} torch threads, device {h['device']}"
                    for h in (r["train"].get("host") for r in done) if h})
    md += [f"{len(by_id)} of {len(plan)} runs finished" + (f", on: {'; '.join(hosts)}" if hosts else "") + ".", ""]

    # ---- Table 1
    md += ["## Table 1: one-shot pruning by metric (offline decoding)", ""]
    hdr = ["Model", "Method", "WER", *[f"WER {g}" for g in groups], "WER before fine-tuning"]
    rows = [[f"{n}-layer", "teacher", *teacher_cells(), "—"]]
    labels = {"oracle": "oracle (dev loss)", "last": "last layers", "random": "random"}
    for ratio, k in sizes:
        for metric in ONESHOT_METRICS + BASELINE_METHODS:
            rs = runs(lambda s: s.kind == "oneshot" and s.metric == metric and s.layers == k)
            before = [r["before_finetune"]["offline"]["wer"] for r in rs if "before_finetune" in r]
            rows.append([f"{k}-layer ({ratio:.0%} pruned)", labels.get(metric, metric),
                         *_cells(rs, "offline", groups, ns), _pct(before, ns)])
    md += _table(hdr, rows) + [""]

    # ---- Table 2
    md += ["## Table 2: scratch vs. distillation vs. pruning (offline decoding)", ""]
    rows = [[f"{n}-layer", "teacher", *teacher_cells()]]
    for ratio, k in sizes:
        for label, pred in (("trained from scratch", lambda s: s.kind == "scratch"),
                            ("distillation", lambda s: s.kind == "distill"),
                            ("pruning (correlation, one-shot)",
                             lambda s: s.kind == "oneshot" and s.metric == "correlation")):
            rs = runs(lambda s, p=pred: p(s) and s.layers == k)
            rows.append([f"{k}-layer", label, *_cells(rs, "offline", groups, ns)])
    md += _table(["Model", "Method", "WER", *[f"WER {g}" for g in groups]], rows) + [""]

    # ---- Table 3
    target = min(k for _, k in sizes)
    md += [f"## Table 3: one-shot vs. iterative pruning to {target} layers (correlation)", ""]
    md += [f"Offline = full context; online = chunked decoding, chunk {CHUNK[0]} encoder frames with "
           f"{CHUNK[1]} chunks of left context, i.e. {CHUNK[0] * CHUNK[1]} frames (the models are trained with "
           "dynamic chunks; the paper decodes its online models with chunk 64, hop 32 and 128 frames of left "
           "context).", ""]
    rows = []
    it_specs = [s for s in plan if s.kind == "iterative" and s.seed == seeds[0]]
    for mode, label in (("offline", "Offline"), ("chunked", "Online")):
        rows.append([label, f"{n}-layer", "teacher", "—", "—", *teacher_cells(mode)])
        rs = runs(lambda s: s.kind == "oneshot" and s.metric == "correlation" and s.layers == target)
        rows.append([label, f"{target}-layer", "one-shot", "—", "—", *_cells(rs, mode, groups, ns)])
        for spec in it_specs:
            rs = runs(lambda s, sp=spec: s.kind == "iterative" and s.schedule == sp.schedule)
            iters = sorted({r.get("iterations") for r in rs if r.get("iterations") is not None})
            when = f"({spec.remove_n}, {spec.every_m})"
            if spec.every_m != spec.schedule[1]:
                when += f" [asked ({spec.schedule[0]}, {spec.schedule[1]})]"
            rows.append([label, f"{target}-layer", "iterative", "/".join(map(str, iters)) or "pending", when,
                         *_cells(rs, mode, groups, ns)])
    md += _table(["Mode", "Model", "Method", "# iterations", "(layers, EI)", "WER", *[f"WER {g}" for g in groups]],
                 rows) + [""]
    if any(s.kind == "iterative" for s in plan):
        md += [f"Iterative epochs are the shorter epochs described above (EI counts them: "
               f"{budget['epochs'] * budget['iterative_split']} in all). Layers removed (original indices, "
               "by epoch), seed " + str(seeds[0]) + ":", ""]
        for spec in it_specs:
            r = by_id.get(spec.id)
            if r:
                md += [f"- ({spec.remove_n}, {spec.every_m}): " + "; ".join(
                    f"after epoch {x['epoch']}: {x['layers']}" for x in r["removals"]) +
                    f" → kept {r['original_layers']}"]
        md += [""]

    # ---- Figure 2
    drawn = []
    for spec in it_specs:
        log_path = out / "runs" / spec.id / "score_log.json"
        if log_path.is_file():
            from ...prune.iterative import figure_data
            from ...prune.plots import plot_score_history

            name = f"reproduction_figure2_{spec.schedule[0]}x{spec.schedule[1]}.png"
            if figures or not (results_dir / name).is_file():
                plot_score_history(figure_data(json.loads(log_path.read_text(encoding="utf-8"))),
                                   results_dir / name)
            drawn.append((spec, name))
    md += ["## Figure 2: correlation scores by layer over fine-tuning epochs", ""]
    if drawn:
        md += ["Epoch 0 = the teacher before fine-tuning; a cross marks the epoch a layer was removed "
               "(a higher correlation means the layer changes its input less: pruned first).", ""]
        md += [f"![iterative ({s.remove_n}, {s.every_m}), seed {s.seed}]({name})" for s, name in drawn] + [""]
    else:
        md += ["pending", ""]

    # ---- oracle agreement
    md += ["## Agreement of the metrics with the removal oracle (teacher, dev set)", ""]
    if scores is not None and "oracle" in scores:
        tau = kendall_agreement(scores, reference="oracle")
        tau_w = kendall_agreement(scores, reference="oracle_wer") if "oracle_wer" in scores else {}
        hdr = ["Metric", "Kendall τ vs oracle (loss)", "τ vs oracle (WER)"]
        for ratio, k in sizes:
            hdr += [f"removed at {ratio:.0%}", f"shared with oracle at {ratio:.0%}"]
        rows = []
        for m in [x for x in scores.metrics if x not in ("oracle", "oracle_wer")] + ["oracle", "oracle_wer"]:
            row = [m, "—" if m == "oracle" else _tau(tau.get(m)), "—" if m == "oracle_wer" else _tau(tau_w.get(m))]
            for ratio, k in sizes:
                drop = select_layers_to_remove(scores, m, ratio=ratio)
                ref = select_layers_to_remove(scores, "oracle", ratio=ratio)
                row += [" ".join(map(str, drop)), f"{len(set(drop) & set(ref))}/{len(ref)}"]
            rows.append(row)
        md += [f"Scores on {scores.num_utterances} dev utterances; τ compares the full prune orders (1 = the same "
               "order as the oracle). The oracle removes each layer alone and measures the dev loss (WER).", ""]
        md += _table(hdr, rows) + [""]
        from ...prune.metrics import plot_scores

        if figures or not (results_dir / "reproduction_scores.png").is_file():
            plot_scores(scores, results_dir / "reproduction_scores.png")
        md += ["![teacher layer scores](reproduction_scores.png)", ""]
    else:
        md += ["pending", ""]

    # ---- per voice
    md += ["## WER by held-out test voice (offline)", ""]
    if voices:
        rows = [[f"{n}-layer teacher",
                 *[f"{100 * teacher['eval']['offline']['by_voice'][v]:.1f}" for v in voices]]]
        for ratio, k in sizes:
            for label, pred in (("scratch", lambda s: s.kind == "scratch"),
                                ("distillation", lambda s: s.kind == "distill"),
                                ("pruned, correlation", lambda s: s.kind == "oneshot" and s.metric == "correlation")):
                rs = runs(lambda s, p=pred: p(s) and s.layers == k)
                rows.append([f"{k}-layer {label}",
                             *[_pct([r["eval"]["offline"]["by_voice"].get(v) for r in rs], ns) for v in voices]])
        for spec in it_specs:
            rs = runs(lambda s, sp=spec: s.kind == "iterative" and s.schedule == sp.schedule)
            rows.append([f"{target}-layer iterative ({spec.remove_n}, {spec.every_m})",
                         *[_pct([r["eval"]["offline"]["by_voice"].get(v) for r in rs], ns) for v in voices]])
        md += _table(["Model", *voices], rows) + [""]
        md += [f"Voice groups in the tables above: {grp}.", ""]
    else:
        md += ["pending", ""]

    md += _findings(runs, sizes, ns, it_specs)

    md += ["## How to reproduce", "",
           "```", "slimasr reproduce --data DATA_DIR --out WORK_DIR --results-dir RESULTS_DIR "
           f"--budget {budget['name']} --seeds "
           + " ".join(map(str, seeds)) + (f" --epochs {budget['epochs']}" if budget['name'] in BUDGETS and
                                          BUDGETS[budget['name']].epochs != budget['epochs'] else ""), "```", "",
           "The command is resumable: run it again to continue; finished runs are kept under WORK_DIR. On one "
           "GPU, `--workers 8 --device cuda` trains eight runs at once (small models leave a GPU mostly idle).",
           ""]
    done_runs = [by_id[s.id] for s in plan if s.id in by_id]
    if done_runs:
        total = sum(r["train"]["seconds"] for r in done_runs) / 60
        devices = sorted({(r["train"].get("host") or {}).get("device", "?") for r in done_runs})
        md += [f"Cost of the finished runs: {total:.0f} run-minutes of training and evaluation in all "
               f"(device: {', '.join(devices)}; runs done concurrently overlap in wall-clock time).", ""]
    (results_dir / "reproduction.md").write_text("\n".join(md), encoding="utf-8")
    # the data directory by name only: the report is shared, the machine's paths are not
    report = {"settings": {**settings, "data": Path(settings["data"]).name}, "seeds": seeds,
              "plan": [s.id for s in plan],
              "teacher": teacher, "scores": scores.to_json() if scores is not None else None,
              "runs": [by_id[s.id] for s in plan if s.id in by_id],
              "pending": [s.id for s in plan if s.id not in by_id],
              # Figure 2's data, so that a work directory can be rebuilt from this file (seed_work_dir)
              "score_logs": {s.id: json.loads((out / "runs" / s.id / "score_log.json").read_text(encoding="utf-8"))
                             for s in plan if s.kind == "iterative" and s.id in by_id
                             and (out / "runs" / s.id / "score_log.json").is_file()}}
    _write_json(results_dir / "reproduction.json", report)
    return report


def _stats(rs: list[dict], mode: str = "offline") -> tuple[float, float | None, int] | None:
    """(mean WER %, sample sd % or None, seeds) of some runs."""
    v = [100 * r["eval"][mode]["wer"] for r in rs if mode in r.get("eval", {})]
    if not v:
        return None
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else None), len(v)


def _fmt(st) -> str:
    m, sd, k = st
    return f"{m:.1f}" + (f" ± {sd:.1f}" if sd is not None else "") + ("" if k > 1 else " (1 seed)")


def _verdict(best, other) -> str:
    """How clear a difference of means is: more than twice the larger seed spread, or not."""
    if best[1] is None or other[1] is None:
        return "one seed: no spread to judge by"
    gap = abs(best[0] - other[0])
    return "clear" if gap > 2 * max(best[1], other[1]) else "within the seed spread"


def _findings(runs, sizes, ns, it_specs) -> list[str]:
    """Whether the paper's three findings hold, computed from the finished runs."""
    md = ["## Do the paper's findings hold here?", "",
          "Computed from the tables above (offline WER unless stated; a difference is called clear when it exceeds "
          "twice the larger standard deviation over seeds).", ""]
    # 1. correlation is the best of the four metrics
    for ratio, k in sizes:
        st = {m: _stats(runs(lambda s, m=m: s.kind == "oneshot" and s.metric == m and s.layers == k))
              for m in ONESHOT_METRICS + BASELINE_METHODS}
        paper = sorted((m for m in ONESHOT_METRICS if st[m]), key=lambda m: st[m][0])
        if "correlation" not in paper or len(paper) < 2:
            md += [f"- **Correlation is the best metric ({ratio:.0%} pruned):** pending.", ""]
            continue
        order = " < ".join(f"{m} {_fmt(st[m])}" for m in paper)
        best = paper[0]
        if best == "correlation":
            verdict = (f"**holds** (next: {paper[1]}, {_verdict(st['correlation'], st[paper[1]])})")
        else:
            verdict = (f"**does not hold**: {best} is lower ({_verdict(st[best], st['correlation'])})")
        base = ", ".join(f"{m} {_fmt(st[m])}" for m in BASELINE_METHODS if st[m])
        md += [f"- **Correlation is the best metric ({ratio:.0%} pruned, {k} layers):** {verdict}. {order}. "
               f"Baselines: {base or 'pending'}."]
    # 2. pruning beats distillation and scratch
    for ratio, k in sizes:
        pr = _stats(runs(lambda s: s.kind == "oneshot" and s.metric == "correlation" and s.layers == k))
        di = _stats(runs(lambda s: s.kind == "distill" and s.layers == k))
        sc = _stats(runs(lambda s: s.kind == "scratch" and s.layers == k))
        if not (pr and di and sc):
            md += [f"- **Pruning beats distillation and scratch ({k} layers):** pending."]
            continue
        holds = pr[0] < di[0] and pr[0] < sc[0]
        md += [f"- **Pruning beats distillation and scratch ({k} layers):** "
               f"{'**holds**' if holds else '**does not hold**'}: pruning {_fmt(pr)}, distillation {_fmt(di)} "
               f"({_verdict(pr, di)}), scratch {_fmt(sc)} ({_verdict(pr, sc)}). Distillation "
               f"{'improves on' if di[0] < sc[0] else 'does not improve on'} its scratch start."]
    # 3. iterative helps (the paper: especially online, and more iterations help more)
    target = min(k for _, k in sizes)
    for mode, label in (("chunked", "online"), ("offline", "offline")):
        one = _stats(runs(lambda s: s.kind == "oneshot" and s.metric == "correlation" and s.layers == target),
                     mode)
        its = [(sp, _stats(runs(lambda s, sp=sp: s.kind == "iterative" and s.schedule == sp.schedule), mode))
               for sp in it_specs]
        its = [(sp, st) for sp, st in its if st]
        if not one or not its:
            md += [f"- **Iterative beats one-shot ({label}):** pending."]
            continue
        best_sp, best = min(its, key=lambda x: x[1][0])
        desc = ", ".join(f"({sp.remove_n}, {sp.every_m}) {_fmt(st)}" for sp, st in its)
        holds = best[0] < one[0]
        md += [f"- **Iterative beats one-shot ({label}, {target} layers):** "
               f"{'**holds**' if holds else '**does not hold**'}: one-shot {_fmt(one)}, iterative {desc} "
               f"({_verdict(best, one)})."]
        if len(its) > 1 and label == "online":
            # to the same depth, fewer layers per removal = more iterations
            more = min(its, key=lambda x: x[0].remove_n)
            fewer = max(its, key=lambda x: x[0].remove_n)
            if more[0] is not fewer[0]:
                md += [f"- **More iterations help more (online):** "
                       f"{'**holds**' if more[1][0] < fewer[1][0] else '**does not hold**'}: "
                       f"({more[0].remove_n}, {more[0].every_m}) {_fmt(more[1])} vs ({fewer[0].remove_n}, "
                       f"{fewer[0].every_m}) {_fmt(fewer[1])} ({_verdict(more[1], fewer[1])})."]
    return md + [""]


def _tau(t: float | None) -> str:
    return "—" if t is None else f"{t:+.2f}"
