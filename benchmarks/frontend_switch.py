"""What switching the default model's front-end to ``dw_striding4`` costs in WER (and buys in FLOPs).

Steps, all on CPU:
1. the default model (``conv2d4`` front-end) -> :func:`slimasr.prune.surgery.switch_subsampling` (SVD init) ->
   :func:`~slimasr.prune.surgery.distill_subsampling` on the training manifest (front-end only);
2. both the original and the switched model are fine-tuned with the same short recipe (``slimasr train --init``),
   so the comparison isolates the front-end, not the extra training;
3. greedy offline WER (and chunked 16/4) on a held-out manifest for: original, switched (SVD only), switched +
   distilled, original fine-tuned, switched fine-tuned.

Example (about 15 minutes on 2 busy cores). These are the commands of the committed results, which were measured
on the previous default model and on the corpora an earlier ``data synth`` recipe made with them; the current
recipe does not remake that audio::

    slimasr data synth --out data/synth --hours 0.1
    slimasr data synth --out data/synth_eval --hours 0.15 --seed 91
    python benchmarks/frontend_switch.py --train data/synth/train.jsonl --dev data/synth/dev.jsonl \\
        --eval data/synth_eval/train.jsonl --epochs 4 --out benchmarks/results/paper_scale/frontend_switch.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _batches(model, manifest: str, batch_size: int = 8):
    import torch

    from slimasr.data.dataset import ASRDataset, BucketBatchSampler, collate
    from slimasr.data.manifest import read_manifest
    from slimasr.tokenizer import Tokenizer

    ds = ASRDataset(read_manifest(manifest), Tokenizer.from_bytes(model.tokenizer_bytes), model.frontend)
    return torch.utils.data.DataLoader(ds, batch_sampler=BucketBatchSampler(ds.durations, batch_size=batch_size,
                                                                            shuffle=False), collate_fn=collate)


def _wer(model, manifest: str) -> dict:
    """Greedy WER offline and chunked 16/4 (PyTorch threads: set once in ``main``)."""
    from slimasr.decoding import decode_manifest

    out = {}
    for label, (c, l) in {"offline": (None, None), "chunked_16_4": (16, 4)}.items():
        r = decode_manifest(model, manifest, chunk_size=c, left_chunks=l)
        out[label] = {"wer": r["wer"], "cer": r["cer"], "utterances": r["utterances"]}
    return out


def _finetune(init: Path, out: Path, args) -> Path:
    cmd = [sys.executable, "-m", "slimasr.cli", "train", "--init", str(init), "--train", args.train, "--dev", args.dev,
           "--out", str(out), "--epochs", str(args.epochs), "--lr", str(args.lr), "--warmup-steps", "20",
           "--seed", "0", "--num-workers", "0", "--device", "cpu"]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return out / "model.pt"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--distill-steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="exp/frontend_switch")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch

    from slimasr.bench.flops import flops_per_audio_second
    from slimasr.model import load_model
    from slimasr.prune.surgery import distill_subsampling, switch_subsampling

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    base = load_model(None).eval()
    svd = switch_subsampling(base, "dw_striding4")
    dist = switch_subsampling(base, "dw_striding4")
    losses = distill_subsampling(dist, base, _batches(base, args.train), args.distill_steps, lr=2e-3)
    dist.eval()
    base.save(work / "base.pt")
    dist.save(work / "dw_distilled.pt")
    models = {"default (conv2d4)": base, "dw_striding4, SVD init": svd.eval(), "dw_striding4, distilled": dist}
    res: dict = {"eval": args.eval, "train": args.train, "epochs": args.epochs, "lr": args.lr,
                 "distill_steps": args.distill_steps, "distill_mse_first_last": [losses[0], losses[-1]],
                 "load_average_start": os.getloadavg(), "models": {}}
    ft_base = _finetune(work / "base.pt", work / "ft_base", args)
    ft_dw = _finetune(work / "dw_distilled.pt", work / "ft_dw", args)
    models["default fine-tuned (conv2d4)"] = load_model(ft_base).eval()
    models["dw_striding4 distilled + fine-tuned"] = load_model(ft_dw).eval()
    for label, m in models.items():
        cfg = m.config
        fl = flops_per_audio_second(cfg, "chunked", chunk_size=16, left_chunks=4)
        res["models"][label] = {"subsampling": cfg.subsampling, "layers": cfg.num_layers,
                                "frontend_params": sum(p.numel() for p in m.encoder.subsampling.parameters()),
                                "chunked_gflops_per_audio_s": fl["total"] / 1e9,
                                "frontend_flops_share": fl["frontend_share"], **_wer(m, args.eval)}
        print(label, json.dumps(res["models"][label]), flush=True)
    res["load_average_end"] = os.getloadavg()
    res["wall_s"] = time.time() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
