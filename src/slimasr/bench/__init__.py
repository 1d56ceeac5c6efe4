"""Benchmarks: accuracy next to speed and memory for models, backends and decoding modes, and the physical floor.

* :mod:`slimasr.bench.runner`: a run (model, backend, mode, decoder) measured in its own process;
  :func:`run_benchmark` runs a list of them and measures each model's floor;
* :mod:`slimasr.bench.flops`: FLOPs from the model config and the GEMM floor measured on this machine;
* :mod:`slimasr.bench.report`: the speed goals, the markdown table and the RTF / WER plot.

Example::

    from slimasr.bench import ModelSpec, plan_runs, run_benchmark, write_outputs
    specs = plan_runs([ModelSpec("full")], ["torch", "onnx"], ["offline"], data="data/test.jsonl", threads=2)
    write_outputs(run_benchmark(specs), "bench.json", "bench.md", "bench.png")
"""
from __future__ import annotations

from .report import evaluate_goals, plot_rtf_wer, to_markdown, write_outputs
from .runner import BACKENDS, DECODERS, MODES, ModelSpec, RunSpec, plan_runs, run_benchmark

__all__ = ["BACKENDS", "DECODERS", "MODES", "ModelSpec", "RunSpec", "evaluate_goals", "plan_runs", "plot_rtf_wer",
           "run_benchmark", "to_markdown", "write_outputs"]
