"""Benchmark results as JSON, a markdown table and a plot of RTF against WER, and the speed goals checked on them.

All ratios in :func:`evaluate_goals` compare runs of the same benchmark result (one invocation, same data and
threads). The first model of the result is the reference ("full") model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

__all__ = ["evaluate_goals", "machine_line", "plot_rtf_wer", "to_markdown", "write_outputs"]

_NOTES = (
    "RTF = compute time / audio time (features, network and search; one stream, batch 1); encoder RTF: the "
    "network alone (offline runs). "
    "Latency: offline, the compute time of an utterance; chunked, the compute per chunk. First partial: from the "
    "start of the audio to the first non-empty partial result; final: from the end of the audio to the final "
    "result (audio fed in real time, simulated). Floor RTF: the model's matrix products timed alone on this "
    "machine (same shapes, same threads); x floor = RTF / floor RTF. Peak RSS is the whole process (each run its "
    "own); for the torch backend it includes PyTorch itself. Params: encoder and CTC head (what inference runs)."
)


def _ok(run: dict) -> bool:
    return "rtf" in run and "skipped" not in run and "error" not in run


def _find(runs: Iterable[dict], spin_threads: bool = False, **want) -> dict | None:
    """The first finished run with the wanted fields, at the given thread policy (older results without
    ``spin_threads`` ran without spinning, sherpa-onnx's with)."""
    for r in runs:
        if _ok(r) and _spins(r) == spin_threads and all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def _spins(r: dict) -> bool:
    """The onnxruntime thread policy of a run: sherpa-onnx's threads spin, ours as recorded (torch: see the
    settings' OMP_WAIT_POLICY; counted as not spinning here)."""
    if r["backend"].startswith("sherpa-onnx"):
        return True
    return r["backend"] != "torch" and bool(r.get("spin_threads"))


def _backend_label(r: dict) -> str:
    return r["backend"] + (" (spin)" if _spins(r) and not r["backend"].startswith("sherpa-onnx") else "")


def _encoder_rtf(r: dict) -> float | None:
    """Network time per audio second: measured directly offline; chunked, the compute minus the search."""
    if r.get("encoder_rtf") is not None:
        return r["encoder_rtf"]
    return r["rtf"] - (r.get("search_rtf") or 0.0)


def _pruned_from(small: dict, big: dict) -> bool:
    """Whether run ``small``'s model can be a pruned version of run ``big``'s: its ``original_layers`` (the
    ModelConfig provenance, None when not pruned) are fewer than and among ``big``'s layers (``big``'s own
    ``original_layers`` when it was pruned too), at the same ``d_model`` and ``architecture`` (the ModelConfig
    fields layer removal keeps, ``runner.ARCHITECTURE_FIELDS``, and the front-end's kind: a pruned NeMo model is
    not a pruned version of a WeNet model of the same width; results written before it was recorded compare
    ``d_model`` only)."""
    kept = small.get("original_layers")
    if kept is None or small["layers"] >= big["layers"] or small.get("d_model") != big.get("d_model"):
        return False
    if small.get("architecture") != big.get("architecture"):
        return False
    return set(kept) <= set(big.get("original_layers") or range(big["layers"]))


def evaluate_goals(result: dict) -> list[dict]:
    """The speed goals, each ``{goal, measured, target, value, met}`` (``met`` None when it is information)."""
    runs = [r for r in result["runs"] if _ok(r)]
    if not runs:
        return []
    models = list(dict.fromkeys(r["model"] for r in result["runs"]))
    ref_name = models[0]
    floors = {(f["model"], f["mode"]): f for f in result.get("floors") or []}
    goals: list[dict] = []

    # 1. onnxruntime fp32 vs PyTorch eager, offline, same threads
    for m in models:
        t = _find(runs, model=m, backend="torch", mode="offline", decoder="greedy")
        o = t and _find(runs, model=m, backend="onnx", mode="offline", decoder="greedy", threads=t["threads"])
        if t and o:
            x = t["rtf"] / o["rtf"]
            goals.append({"goal": f"onnx fp32 vs torch eager, offline ({m})",
                          "measured": f"{x:.2f}x (RTF {t['rtf']:.3f} -> {o['rtf']:.3f})", "target": ">= 2x",
                          "value": x, "met": x >= 2.0})

    # 2. pruned encoders vs the model they were pruned from, same backend and mode (other pairs: no row)
    for backend in ("onnx", "torch"):
        first = _find(runs, model=ref_name, backend=backend, mode="offline", decoder="greedy")
        if not first:
            continue
        for other in models[1:]:
            o = _find(runs, model=other, backend=backend, mode="offline", decoder="greedy", threads=first["threads"])
            if o and _pruned_from(o, first):
                ref, r = first, o
            elif o and _pruned_from(first, o):
                ref, r = o, first
            else:
                continue
            enc = _encoder_rtf(ref) / _encoder_rtf(r)
            e2e = ref["rtf"] / r["rtf"]
            ideal = ref["layers"] / r["layers"]
            big = r["layers"] <= 0.6 * ref["layers"] + 1e-9
            extra = ""
            f_ref, f_m = floors.get((ref["model"], "offline")), floors.get((r["model"], "offline"))
            if f_ref and f_m:
                extra = (f"; FLOPs {f_ref['flops_per_audio_s'] / f_m['flops_per_audio_s']:.2f}x fewer, front-end "
                         f"{100 * f_m['frontend_flops_share']:.0f}% of them")
            goals.append({"goal": f"{r['model']} ({r['layers']} layers) vs {ref['model']} ({ref['layers']}), "
                                  f"{backend} offline",
                          "measured": f"encoder {enc:.2f}x, end to end {e2e:.2f}x (layers {ideal:.2f}x{extra})",
                          "target": ">= 1.5x (encoder)" if big else "-", "value": enc,
                          "met": (enc >= 1.5) if big else None})
        break

    # 3. chunked per-chunk compute of the reference model
    for r in runs:
        if r["model"] == ref_name and r["mode"] == "chunked" and r.get("chunk_p95_ms") is not None:
            limit = r["chunk_ms"] / 4
            goals.append({"goal": f"chunk compute p95, {_backend_label(r)} {r['decoder']} ({ref_name}, "
                                  f"{r['threads']} threads)",
                          "measured": f"{r['chunk_p95_ms']:.1f} ms per {r['chunk_ms']:.0f} ms chunk",
                          "target": f"< {limit:.0f} ms", "value": r["chunk_p95_ms"],
                          "met": r["chunk_p95_ms"] < limit})

    # 4. beam search (with the LM) vs the encoder
    for r in runs:
        if r["decoder"] == "beam":
            enc = _encoder_rtf(r) if r["mode"] == "offline" else r["rtf"] - r["search_rtf"]
            x = r["search_rtf"] / enc
            goals.append({"goal": f"beam {r.get('beam_size')}{' + LM' if r.get('lm') else ''} search vs encoder, "
                                  f"{r['model']} {_backend_label(r)} {r['mode']}",
                          "measured": f"search RTF {r['search_rtf']:.3f} vs encoder RTF {enc:.3f} ({x:.2f}x)",
                          "target": "<= 1x", "value": x, "met": x <= 1.0})

    # 5. our runtime vs sherpa-onnx on the same file and threads; sherpa-onnx's worker threads spin, so the goal
    #    compares our runtime spinning too, where such a run exists (our default, not spinning, is information)
    for m in models:
        for ours, theirs in (("onnx", "sherpa-onnx"), ("onnx-int8", "sherpa-onnx-int8")):
            for mode in ("chunked", "offline"):
                for spin in (True, False):
                    a = _find(runs, spin_threads=spin, model=m, backend=ours, mode=mode, decoder="greedy")
                    b = a and _find(runs, spin_threads=True, model=m, backend=theirs, mode=mode, decoder="greedy",
                                    threads=a["threads"])
                    if not (a and b):
                        continue
                    x = a["rtf"] / b["rtf"]
                    is_goal = mode == "chunked" and spin
                    policy = "both spinning" if spin else "ours not spinning, sherpa-onnx spinning"
                    goals.append({"goal": f"slimasr runtime vs sherpa-onnx, {ours} {mode} ({m}; {policy})",
                                  "measured": f"{x:.2f}x sherpa-onnx's RTF ({a['rtf']:.3f} vs {b['rtf']:.3f})",
                                  "target": "<= 1.10x" if is_goal else "-", "value": x,
                                  "met": (x <= 1.10) if is_goal else None})
    return goals


# ---------------------------------------------------------------------------------------------- markdown
def _frame_ms(done: list[dict], settings: dict) -> str:
    """An encoder frame's duration in the chunked runs (``chunk_ms / chunk_size``: 40 ms at 4x subsampling of 10 ms
    features, 80 ms at 8x), several joined by "/"; 40 when no chunked run recorded it."""
    c = settings.get("chunk_size")
    ms = dict.fromkeys(f"{r['chunk_ms'] / c:g}" for r in done if r.get("chunk_ms") and c)
    return "/".join(ms) or "40"


def _subsampling_names(result: dict) -> str:
    """The convolutional subsampling of the benchmarked models, by name (``ModelConfig.subsampling``: conv2d4,
    dw_striding8, ...); "convolutional subsampling" for results that did not record it."""
    names = dict.fromkeys((r.get("architecture") or {}).get("subsampling") for r in result.get("runs") or [])
    names.pop(None, None)
    return f"{' / '.join(names)} subsampling" if names else "convolutional subsampling"


def _f(x, fmt: str = ".3f", scale: float = 1.0) -> str:
    return "-" if x is None else format(x * scale, fmt)


def _pair(a, b, fmt: str = ".0f") -> str:
    return "-" if a is None else f"{a:{fmt}} / {b:{fmt}}"


def goals_table(goals: list[dict]) -> list[str]:
    """:func:`evaluate_goals`' goals as a markdown table (goal, measured, target, met: yes / **no** / -)."""
    return _table(["goal", "measured", "target", "met"],
                  [[g["goal"], g["measured"], g["target"], "-" if g["met"] is None else
                    ("yes" if g["met"] else "**no**")] for g in goals])


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def machine_line(machine: dict) -> str:
    v = machine.get("versions", {})
    ort = v.get("onnxruntime") or v.get("onnxruntime-gpu")
    cpu = machine.get("cpu_model", "?") + (f" ({machine['cpu_detail']})" if machine.get("cpu_detail") else "")
    parts = [f"CPU {cpu}", f"{machine.get('usable_cores')} usable of "
             f"{machine.get('logical_cores')} logical cores", f"{machine.get('memory_gib')} GiB RAM",
             machine.get("os", "")]
    if machine.get("gpu"):
        parts.append(f"GPU {machine['gpu']}")
    vers = ", ".join(f"{k} {x}" for k, x in (("torch", v.get("torch")), ("onnxruntime", ort),
                                               ("sherpa-onnx", v.get("sherpa-onnx"))) if x)
    return "; ".join(p for p in parts if p) + (f"; {vers}" if vers else "")


def to_markdown(result: dict, title: str = "Benchmark") -> str:
    """The runs table, the speed goals, the physical floor and what was skipped, as markdown."""
    machine, settings, runs = result["machine"], result.get("settings", {}), result["runs"]
    done = [r for r in runs if _ok(r)]
    lines = [f"## {title}", ""]
    lines.append(f"Machine: {machine_line(machine)}.  ")
    la = machine.get("load_average")
    if la:
        lines.append(f"Load average at the start: {la[0]:.2f} (1 min); at the end: "
                     f"{machine.get('load_average_end', ['?'])[0]}.  ")
    if done:
        r0 = done[0]
        lines.append(f"Data: {settings.get('data')} ({r0['utterances']} utterances, {r0['audio_s'] / 60:.1f} min of "
                     f"audio); threads {', '.join(map(str, settings.get('threads', [])))}; chunked: chunk "
                     f"{settings.get('chunk_size')} x {_frame_ms(done, settings)} ms, {settings.get('left_chunks')} "
                     f"left chunks, audio fed in "
                     f"{settings.get('feed_ms')} ms pieces; {settings.get('rounds', 1)} interleaved round(s) of fresh processes.")
    lines.append("")
    header = ["model", "backend", "mode", "decoder", "layers", "params (M)", "file (MB)", "WER %", "CER %", "RTF",
              "encoder RTF", "floor RTF", "x floor", "latency p50 / p95 (ms)", "first partial p50 (ms)", "final p50 / p95 (ms)",
              "x real time", "peak RSS (MB)"]
    rows = []
    for r in done:
        chunked = r["mode"] == "chunked"
        lat = _pair(r.get("chunk_p50_ms"), r.get("chunk_p95_ms"), ".1f") if chunked else \
            _pair(r.get("latency_p50_ms"), r.get("latency_p95_ms"))
        dec = r["decoder"] + (f" {r.get('beam_size')}" if r["decoder"] == "beam" else "") + \
            (" + LM" if r.get("lm") else "")
        rows.append([r["model"], _backend_label(r), r["mode"] + (" (per chunk)" if chunked else ""), dec,
                     str(r["layers"]), f"{r['params'] / 1e6:.2f}", f"{r['model_file_mb']:.1f}",
                     _f(r["wer"], ".2f", 100), _f(r["cer"], ".2f", 100), _f(r["rtf"]),
                     _f(r.get("encoder_rtf")), _f(r.get("floor_rtf")),
                     _f(r.get("x_floor"), ".1f"), lat, _f(r.get("first_partial_p50_ms"), ".0f"),
                     _pair(r.get("final_latency_p50_ms"), r.get("final_latency_p95_ms")),
                     _f(r["throughput_x_realtime"], ".1f"), f"{r['peak_rss_mb']:.0f}"
                     + (f" (GPU {r['gpu_memory_mb']:.0f})" if r.get("gpu_memory_mb") else "")])
    lines += _table(header, rows)
    lines += ["", _NOTES, ""]

    goals = evaluate_goals(result)
    if goals:
        lines += ["### Speed goals", ""]
        lines += goals_table(goals)
        lines.append("")

    floors = result.get("floors") or []
    if floors:
        lines += ["### Physical floor", ""]
        frows = []
        for f in floors:
            c = f["flops_by_component"]
            tot = f["flops_per_audio_s"]
            attn = (c.get("attention", 0) + c.get("attention_pos", 0)) / tot
            share = (f"{100 * c.get('ffn', 0) / tot:.0f} / {100 * attn:.0f} "
                     f"({100 * c.get('attention_pos', 0) / tot:.0f}) / {100 * c.get('conv', 0) / tot:.0f} / "
                     f"{100 * f['frontend_flops_share']:.0f}")
            frows.append([f["model"], f["mode"], str(f["layers"]), f"{tot / 1e9:.3f}", share,
                          f"{f['gemm_gflops']:.1f}", f"{f['floor_rtf']:.4f}",
                          f"{100 * f['frontend_floor_share']:.1f}%"])
        lines += _table(["model", "mode", "layers", "GFLOPs per audio s",
                         "FFN / attention (rel. pos.) / conv / front-end %", "GEMM GFLOP/s", "floor RTF",
                         "front-end share of floor"], frows)
        lines += ["", f"The front-end ({_subsampling_names(result)}) is not pruned: its share grows as layers "
                  "are removed.", ""]

    skipped = [(r, x) for r in done for x in r.get("skipped_items") or []]
    if skipped:
        lines += ["### Skipped utterances", ""]
        lines += [f"- {r['model']} / {_backend_label(r)} / {r['mode']} / {r['decoder']}: {x['audio_filepath']}: "
                  f"{x['reason']}" for r, x in skipped]
        lines.append("")
    other = [r for r in runs if not _ok(r)]
    if other:
        lines += ["### Not run", ""]
        for r in other:
            why = r.get("skipped") or ("failed: " + r.get("error", "").splitlines()[0])
            lines.append(f"- {r['model']} / {_backend_label(r)} / {r['mode']} / {r['decoder']}: {why}")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- plot
def plot_rtf_wer(result: dict, path: str | os.PathLike, title: str = "RTF against WER") -> Path:
    """Every run as a point (RTF on a log axis, WER %): colour = model, marker = backend, hollow = chunked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in result["runs"] if _ok(r)]
    models = list(dict.fromkeys(r["model"] for r in runs))
    backends = list(dict.fromkeys(_backend_label(r) for r in runs))
    markers = "osD^vP*X"
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in runs:
        c = colors[models.index(r["model"]) % len(colors)]
        mk = markers[backends.index(_backend_label(r)) % len(markers)]
        hollow = r["mode"] == "chunked"
        ax.scatter(r["rtf"], 100 * r["wer"], marker=mk, s=60, edgecolors=c,
                   facecolors="none" if hollow else c, linewidths=1.5, zorder=3)
        if r["decoder"] == "beam":
            ax.annotate("beam", (r["rtf"], 100 * r["wer"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    for f in result.get("floors") or []:
        c = colors[models.index(f["model"]) % len(colors)] if f["model"] in models else "grey"
        ax.axvline(f["floor_rtf"], color=c, ls=":", lw=1, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("RTF (compute / audio time; log scale; dotted: physical floor)")
    ax.set_ylabel("WER %")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[i % len(colors)], marker="o", ls="", label=m) for i, m in enumerate(models)]
    handles += [Line2D([], [], color="k", marker=markers[i % len(markers)], ls="", label=b)
                for i, b in enumerate(backends)]
    handles += [Line2D([], [], color="k", marker="o", ls="", mfc="none", label="chunked (hollow)")]
    ax.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(result: dict, json_path: str | os.PathLike, markdown_path: str | os.PathLike | None = None,
                  plot_path: str | os.PathLike | None = None, title: str = "Benchmark") -> None:
    """Write the result JSON (with the evaluated goals), and optionally the markdown and the plot."""
    result = {**result, "goals": evaluate_goals(result)}
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if markdown_path:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown_path).write_text(to_markdown(result, title) + "\n", encoding="utf-8")
    if plot_path and any(_ok(r) for r in result["runs"]):
        plot_rtf_wer(result, plot_path)
