"""Per-engine / per-voice WER of a model on held-out speech, offline and chunked, plus real human recordings.

    slimasr data synth --out data/eval8 --hours 8 --seed 0 --splits test --jobs 2
    slimasr data synth --out data/synth3 --hours 3 --seed 0 --augment 0.6 --jobs 2   # lm_text.txt: training text
    slimasr data real-test --out data/real
    python benchmarks/default_model_eval.py --test-dir data/eval8 --real data/real --lm-text data/synth3/lm_text.txt \
        --name baseline --out benchmarks/results/default_model          # --model M (default: the embedded model)

Test sets (none of them is ever trained on):

* ``test_espeak.jsonl``: held-out espeak-ng voice variants (one row per voice, and all together);
* ``test_flite.jsonl``: flite ``slt`` (held-out voice of a training engine);
* ``test_festival.jsonl``: the Festival engine (held-out engine: never used for training);
* ``test_piper.jsonl``: Piper's ``en_US-joe-medium`` at the held-out ``length_scale`` 1.3 on held-out sentences
  (the voice itself is in training at 0.8-1.15, so this is a held-out *setting*, not a held-out speaker);
* ``--real``: Debian pocketsphinx-testdata recordings (LibriVox read speech and the "cards" utterances), reported
  separately, greedy and beam search + a word 4-gram LM built from ``--lm-text`` (the training sentences; the script
  records how many test transcripts occur verbatim in that text).

Every row is :func:`slimasr.decoding.decode_manifest` with the PyTorch backend (the numbers ``slimasr decode``
prints): greedy, or beam 100 with and without the LM (weight 0.6). Chunked = streaming with chunk 16 frames (after
subsampling) and 4 left chunks. Writes ``eval_<name>.json`` and
``eval_<name>.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

CHUNK, LEFT = 16, 4
ENGINE_SETS = (("espeak", "espeak-ng held-out voices"), ("flite", "flite slt (held-out voice)"),
               ("festival", "Festival (held-out engine)"), ("piper", "Piper joe, length_scale 1.3 (held-out setting)"))
TARGETS = {"espeak": 0.10, "flite": 0.35, "festival": 0.35}  # WER offline; chunked within 15% relative everywhere


def _by_speaker(hyps: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for h in hyps:
        out.setdefault(h.get("speaker", "?"), []).append(h)
    return out


def _rates(hyps: list[dict]) -> dict:
    from slimasr.scoring import error_rates

    return error_rates([h["reference"] for h in hyps], [h["text"] for h in hyps])


def decoder_name(decoding) -> str:
    if decoding.method == "greedy":
        return "greedy"
    return (f"beam {decoding.beam_size} + 4-gram LM (weight {decoding.lm_weight})" if decoding.lm is not None
            else f"beam {decoding.beam_size}, no LM")


def score_rows(model, manifest: Path, label: str, decoding, per_voice: bool) -> list[dict]:
    """WER/CER offline and chunked 16/4 of ``manifest`` with ``decoding`` (and per speaker when ``per_voice``)."""
    from slimasr.decoding import BackendConfig, decode_manifest

    off = decode_manifest(model, manifest, BackendConfig(decoding=decoding))
    chk = decode_manifest(model, manifest, BackendConfig(decoding=decoding, chunk_size=CHUNK, left_chunks=LEFT))
    groups = [(label, off["hyps"], chk["hyps"])]
    if per_voice:
        a, b = _by_speaker(off["hyps"]), _by_speaker(chk["hyps"])
        groups = [(f"{label}: {spk}", a[spk], b.get(spk, [])) for spk in sorted(a)] + groups
    rows = []
    for name, ho, hc in groups:
        ro, rc = _rates(ho), _rates(hc)
        rows.append({"set": name, "decoder": decoder_name(decoding), "utterances": ro["utterances"],
                     "wer_offline": ro["wer"], "cer_offline": ro["cer"], "wer_chunked": rc["wer"],
                     "cer_chunked": rc["cer"]})
    rows[-1].update(skipped=off["skipped"], rtf_offline=off["rtf"], audio_s=off["audio_s"])
    return rows


def lm_overlap(lm_text: Path, manifest: Path) -> dict:
    """How many test transcripts occur verbatim as a line of the LM text (should be none)."""
    from slimasr.data.manifest import read_manifest
    from slimasr.tokenizer import normalize_text

    lines = {normalize_text(s) for s in lm_text.read_text(encoding="utf-8").splitlines()}
    refs = [normalize_text(r["text"]) for r in read_manifest(manifest)]
    return {"lm_text_lines": len(lines), "test_transcripts": len(refs),
            "test_transcripts_in_lm_text": sum(r in lines for r in refs)}


def _pct(x) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}%"


def markdown(result: dict) -> str:
    lines = [f"# Default-model evaluation: {result['name']}", "",
             f"Model: `{result['model']}`. {result['command']}", "",
             "Greedy CTC unless the decoder column says otherwise; chunked = chunk 16, 4 left chunks. "
             "Relative = chunked WER / offline WER - 1.", "",
             "| test set | decoder | utts | WER offline | CER offline | WER chunked 16/4 | CER chunked | relative |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        rel = (r["wer_chunked"] / r["wer_offline"] - 1) if r["wer_offline"] else float("nan")
        bold = ":" not in r["set"]
        s = f"**{r['set']}**" if bold else r["set"]
        lines.append(f"| {s} | {r['decoder']} | {r['utterances']} | {_pct(r['wer_offline'])} | "
                     f"{_pct(r['cer_offline'])} | {_pct(r['wer_chunked'])} | {_pct(r['cer_chunked'])} | "
                     f"{'–' if rel != rel else f'{100 * rel:+.0f}%'} |")
    lines += ["", "Targets (WER offline): " + ", ".join(f"{k} ≤ {100 * v:.0f}%" for k, v in TARGETS.items())
              + "; chunked within 15% relative of offline everywhere.", ""]
    for t in result["targets"]:
        lines.append(f"- {t}")
    if result.get("lm"):
        o = result["lm"]
        lines += ["", f"LM: word 4-gram from {o['lm_text_lines']} training sentences; "
                  f"{o['test_transcripts_in_lm_text']} of {o['test_transcripts']} real-test transcripts occur in it "
                  "verbatim."]
    lines += ["", f"Wall time of this evaluation: {result['seconds']:.0f} s on {result['threads']} thread(s).", ""]
    return "\n".join(lines)


def target_lines(rows: list[dict]) -> list[str]:
    out = []
    totals = {r["set"]: r for r in rows if r["decoder"] == "greedy" and ":" not in r["set"]}
    for key, label in ENGINE_SETS:
        r = totals.get(label)
        if r is None:
            continue
        if key in TARGETS:
            ok = r["wer_offline"] <= TARGETS[key]
            out.append(f"{label}: WER {_pct(r['wer_offline'])} offline, target ≤ {100 * TARGETS[key]:.0f}%: "
                       f"{'met' if ok else 'MISSED'}")
    for r in totals.values():
        if r["wer_offline"]:
            rel = r["wer_chunked"] / r["wer_offline"] - 1
            out.append(f"{r['set']}: chunked {100 * rel:+.0f}% relative to offline, target ≤ +15%: "
                       f"{'met' if rel <= 0.15 else 'MISSED'}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model .pt (default: the embedded default model)")
    ap.add_argument("--test-dir", required=True, type=Path, help="a `data synth` directory with test_*.jsonl")
    ap.add_argument("--real", type=Path, default=None, help="a `data real-test` directory (real.jsonl)")
    ap.add_argument("--lm-text", type=Path, default=None, help="LM training text (training sentences only)")
    ap.add_argument("--name", default="baseline")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/default_model"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from slimasr.cli.decode import torch_threads

    torch_threads(args.threads)  # before torch is imported: its OpenMP threads sleep while they wait
    from slimasr.model import load_model
    from slimasr.runtime.decoders import DecodingConfig

    GREEDY = DecodingConfig()
    t0 = time.perf_counter()
    model = load_model(args.model)
    model.eval()
    rows: list[dict] = []
    for key, label in ENGINE_SETS:
        m = args.test_dir / f"test_{key}.jsonl"
        if not m.is_file() or not m.read_text(encoding="utf-8").strip():
            print(f"{m}: missing or empty, skipped")
            continue
        rows += score_rows(model, m, label, GREEDY, per_voice=key == "espeak")
        print(json.dumps(rows[-1]))
    lm_info = None
    if args.real is not None:
        real = args.real / "real.jsonl"
        if not real.is_file():
            raise SystemExit(f"--real {args.real}: no real.jsonl (build it with `slimasr data real-test`)")
        label = "real recordings (pocketsphinx-testdata)"
        rows += score_rows(model, real, label, GREEDY, per_voice=True)
        rows += score_rows(model, real, label, DecodingConfig(method="beam", beam_size=100), per_voice=True)
        if args.lm_text is not None:
            import tempfile

            from slimasr.lm import build_lm

            with tempfile.TemporaryDirectory() as tmp:  # the LM is rebuilt from the text on every run
                lm = build_lm(args.lm_text, Path(tmp) / "lm.arpa", order=4)
                lm_info = lm_overlap(args.lm_text, real)
                rows += score_rows(model, real, label, DecodingConfig.paper(lm), per_voice=True)
    result = {"name": args.name, "model": args.model or "embedded default (src/slimasr/assets/default/model.pt)",
              "command": "`python benchmarks/default_model_eval.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None) + "`",
              "rows": rows, "targets": target_lines(rows), "lm": lm_info, "threads": args.threads,
              "seconds": time.perf_counter() - t0}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"eval_{args.name}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (args.out / f"eval_{args.name}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
