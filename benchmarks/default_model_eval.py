r"""Per-engine / per-voice WER of a model on held-out speech, offline and chunked, plus real human recordings, and
where the errors come from: greedy CTC against beam search + LM, test words never heard in training, leak checks.

    slimasr data synth --out data/eval8 --hours 8 --seed 0 --splits test --jobs 2
    slimasr data synth --out data/synth3 --hours 3 --seed 0 --augment 0.6 --jobs 2   # lm_text.txt: training text
    slimasr data real-test --out data/real
    python benchmarks/default_model_eval.py --test-dir data/eval8 --real data/real --lm-text data/synth3/lm_text.txt \
        --train data/synth12/train.jsonl --name mine --out results    # --model M (default: the embedded model)

Test sets (none of them is ever trained on):

* ``test_espeak.jsonl``: held-out espeak-ng voice variants (one row per voice, and all together);
* ``test_flite.jsonl``: flite ``slt`` (held-out voice of a training engine);
* ``test_festival.jsonl``: the Festival engine (held-out engine: never used for training);
* ``test_piper.jsonl``: Piper's ``en_US-joe-medium`` at the held-out ``length_scale`` 1.3 on held-out sentences
  (the voice itself is in training at 0.8-1.15, so this is a held-out *setting*, not a held-out speaker);
* ``--real``: Debian pocketsphinx-testdata recordings (LibriVox read speech and the "cards" utterances), reported
  separately (with a beam search row without LM as well).

Every row is :func:`slimasr.decoding.decode_manifest` with the PyTorch backend (the numbers ``slimasr decode``
prints), offline and chunked (streaming with chunk 16 frames after subsampling and 4 left chunks): greedy on every
set and, with ``--lm-text``, beam 100 + a word 4-gram LM estimated from that text by KenLM's ``lmplz``
(:func:`slimasr.lm.build_lm`) at the paper's weight 0.6 (``DecodingConfig.paper``), the same for every set and
fixed before any test set was decoded. The targets judge greedy offline WER; the beam + LM figure stands beside them.

Diagnostics, per test set (:func:`text_diagnostics`, :func:`oov_errors`; text normalised as for scoring):

* **leak check**: how many test transcripts occur verbatim as a sentence of the LM text and of the ``--train``
  manifests (the synthetic test sentences are held out by construction: any other figure than 0 is printed as a LEAK);
* **OOV share**: the test word tokens that never occur in the training transcripts (``--train``) and in the LM text,
  the words greedy CTC must spell from sound alone;
* **where the offline errors fall**: substituted or deleted reference words that are OOV (against the training
  transcripts, else the LM text) and not, in the WER's own alignment.

Writes ``eval_<name>.json`` and ``eval_<name>.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CHUNK, LEFT = 16, 4
LM_ORDER = 4
ENGINE_SETS = (("espeak", "espeak-ng held-out voices"), ("flite", "flite slt (held-out voice)"),
               ("festival", "Festival (held-out engine)"), ("piper", "Piper joe, length_scale 1.3 (held-out setting)"))
REAL_SET = "real recordings (pocketsphinx-testdata)"
KNOWN_LABELS = {"lm_text": "LM text", "train": "training manifests"}
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


def score_rows(model, manifest: Path, label: str, decoding, per_voice: bool,
               vocabulary: frozenset[str] | None = None) -> list[dict]:
    """WER/CER offline and chunked 16/4 of ``manifest`` with ``decoding`` (and per speaker when ``per_voice``);
    with a ``vocabulary``, each row's ``oov_offline`` says which offline errors fall on words outside it
    (:func:`oov_errors`). The set's row (the last) also holds the wall ``seconds`` of both decodes."""
    from slimasr.decoding import BackendConfig, decode_manifest

    t0 = time.perf_counter()
    off = decode_manifest(model, manifest, BackendConfig(decoding=decoding))
    chk = decode_manifest(model, manifest, BackendConfig(decoding=decoding, chunk_size=CHUNK, left_chunks=LEFT))
    seconds = time.perf_counter() - t0
    groups = [(label, off["hyps"], chk["hyps"])]
    if per_voice:
        a, b = _by_speaker(off["hyps"]), _by_speaker(chk["hyps"])
        groups = [(f"{label}: {spk}", a[spk], b.get(spk, [])) for spk in sorted(a)] + groups
    rows = []
    for name, ho, hc in groups:
        ro, rc = _rates(ho), _rates(hc)
        row = {"set": name, "decoder": decoder_name(decoding), "utterances": ro["utterances"],
               "wer_offline": ro["wer"], "cer_offline": ro["cer"], "wer_chunked": rc["wer"], "cer_chunked": rc["cer"]}
        if vocabulary is not None:
            row["oov_offline"] = oov_errors([h["reference"] for h in ho], [h["text"] for h in ho], vocabulary)
        rows.append(row)
    rows[-1].update(skipped=off["skipped"], rtf_offline=off["rtf"], audio_s=off["audio_s"], seconds=seconds)
    return rows


@dataclass(frozen=True)
class KnownText:
    """The sentences and words of a text a model or LM learnt from, normalised as references are scored
    (:func:`slimasr.scoring.normalize_for_scoring`: lower case, numbers spelled out, punctuation a word break).

    ``name`` is the key under which :func:`text_diagnostics` reports against it ("lm_text", "train").
    """

    name: str
    sentences: frozenset[str]
    words: frozenset[str]

    @classmethod
    def from_texts(cls, name: str, texts: Iterable[str]) -> "KnownText":
        from slimasr.scoring import normalize_for_scoring

        sentences = frozenset(normalize_for_scoring(t) for t in texts) - {""}
        return cls(name, sentences, frozenset(w for s in sentences for w in s.split()))


def text_diagnostics(references: Sequence[str], known: Sequence[KnownText]) -> dict:
    """Leak check and out-of-vocabulary share of one test set's transcripts against each known text.

    Returns:
        ``{"transcripts", "ref_words", NAME: {"transcripts_verbatim", "oov_words"}}`` for each ``known`` text:
        how many (normalised) test transcripts equal one of its non-empty sentences (a leak: must be 0 for a
        held-out set), and how many test word tokens are not among its words (counts, not fractions).
    """
    from slimasr.scoring import normalize_for_scoring

    refs = [normalize_for_scoring(r) for r in references]
    tokens = [w for r in refs for w in r.split()]
    out: dict = {"transcripts": len(refs), "ref_words": len(tokens)}
    for k in known:
        out[k.name] = {"transcripts_verbatim": sum(r in k.sentences for r in refs),
                       "oov_words": sum(w not in k.words for w in tokens)}
    return out


def oov_errors(references: Sequence[str], hypotheses: Sequence[str], vocabulary: frozenset[str]) -> dict:
    """Which reference words the errors fall on: words outside ``vocabulary`` (OOV) or inside it.

    The word alignment is the one :func:`slimasr.scoring.error_counts` scores (jiwer's ``process_words`` on
    :func:`~slimasr.scoring.normalize_for_scoring` text; empty references skipped, their hypothesis words counted
    as insertions), so ``oov_word_errors + iv_word_errors + insertions`` is that function's ``word_errors``.

    Returns:
        ``{"ref_words", "oov_words", "oov_word_errors", "iv_word_errors", "insertions"}``: a reference word is
        an error when it is substituted or deleted; insertions belong to no reference word.
    Raises:
        ValueError: if the two sequences differ in length.
    """
    import jiwer

    from slimasr.scoring import normalize_for_scoring

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses; expected one of each")
    pairs = [(normalize_for_scoring(r), normalize_for_scoring(h)) for r, h in zip(references, hypotheses)]
    scored = [(r.split(), h) for r, h in pairs if r]
    out = {"ref_words": sum(len(r) for r, _ in scored),
           "oov_words": sum(w not in vocabulary for r, _ in scored for w in r),
           "oov_word_errors": 0, "iv_word_errors": 0,
           "insertions": sum(len(h.split()) for r, h in pairs if not r)}
    if not scored:
        return out
    o = jiwer.process_words([" ".join(r) for r, _ in scored], [h for _, h in scored])
    for (ref, _), chunks in zip(scored, o.alignments):
        for c in chunks:
            if c.type == "insert":
                out["insertions"] += c.hyp_end_idx - c.hyp_start_idx
            elif c.type != "equal":                  # substitute, delete: each reference word in it is wrong
                for w in ref[c.ref_start_idx:c.ref_end_idx]:
                    out["oov_word_errors" if w not in vocabulary else "iv_word_errors"] += 1
    return out


def _pct(x) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}%"


def _share(n: int, d: int) -> str:
    return f"{n} of {d} ({_pct(n / d if d else float('nan'))})"


def leak_lines(diagnostics: dict) -> list[str]:
    """One line per test set and known text whose transcripts occur verbatim in it (none for a held-out set)."""
    out = []
    for name, d in diagnostics.items():
        for key, label in KNOWN_LABELS.items():
            n = d.get(key, {}).get("transcripts_verbatim", 0)
            if n:
                out.append(f"LEAK: {n} of {d['transcripts']} transcripts of {name} occur verbatim in the {label}; "
                           "its figures are not held-out figures")
    return out


def _diagnostics_table(result: dict) -> list[str]:
    diag, known = result["text_diagnostics"], result["known_texts"]
    lines = ["## The test text against the training text and the LM text", "",
             "Verbatim = the normalised transcript equals a sentence of that text (a leak: the synthetic test "
             "sentences are held out by construction, so this must be 0). OOV = word tokens of the test transcripts "
             "that never occur in that text: " + ("; ".join(f"{KNOWN_LABELS[k]} = {v}" for k, v in known.items())
                                                  or "none given (--lm-text, --train), so not measured") + ".", "",
             "| test set | transcripts | words | verbatim in LM text | verbatim in training manifests | "
             "OOV: not in training transcripts | OOV: not in LM text |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, d in diag.items():
        def cell(key: str, col: str, total: int) -> str:
            if key not in d:
                return "–"
            n = d[key][col]
            return f"**{_share(n, total)}**" if col == "transcripts_verbatim" and n else _share(n, total)

        lines.append(f"| {name} | {d['transcripts']} | {d['ref_words']} | "
                     f"{cell('lm_text', 'transcripts_verbatim', d['transcripts'])} | "
                     f"{cell('train', 'transcripts_verbatim', d['transcripts'])} | "
                     f"{cell('train', 'oov_words', d['ref_words'])} | {cell('lm_text', 'oov_words', d['ref_words'])} |")
    return lines


def _oov_table(result: dict) -> list[str]:
    rows = [r for r in result["rows"] if "oov_offline" in r and ":" not in r["set"]]
    if not rows:
        return []
    lines = ["## Where the offline errors fall", "",
             f"OOV = a reference word not in the {result['oov_vocabulary']}. A reference word is wrong when it is "
             "substituted or deleted (the WER's own alignment); insertions belong to no reference word. The last "
             "column is the share of all word errors (substitutions, deletions, insertions) that fall on OOV words.",
             "", "| test set | decoder | WER offline | OOV words | OOV words wrong | other words wrong | insertions "
             "| errors on OOV words |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        o = r["oov_offline"]
        iv = o["ref_words"] - o["oov_words"]
        errors = o["oov_word_errors"] + o["iv_word_errors"] + o["insertions"]
        lines.append(f"| {r['set']} | {r['decoder']} | {_pct(r['wer_offline'])} | "
                     f"{_share(o['oov_words'], o['ref_words'])} | {_share(o['oov_word_errors'], o['oov_words'])} | "
                     f"{_share(o['iv_word_errors'], iv)} | "
                     f"{o['insertions']} | {_share(o['oov_word_errors'], errors)} |")
    return lines


def markdown(result: dict) -> str:
    lines = [f"# Default-model evaluation: {result['name']}", "",
             f"Model: `{result['model']}`. {result['command']}", ""]
    lines += [f"**{w}**" for w in result.get("leaks", [])] + ([""] if result.get("leaks") else [])
    lines += ["Decoder: greedy CTC, or beam search with a word 4-gram LM (the decoder column); chunked = chunk 16, 4 "
              "left chunks. Relative = chunked WER / offline WER - 1.", "",
              "| test set | decoder | utts | WER offline | CER offline | WER chunked 16/4 | CER chunked | relative |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        rel = (r["wer_chunked"] / r["wer_offline"] - 1) if r["wer_offline"] else float("nan")
        bold = ":" not in r["set"]
        s = f"**{r['set']}**" if bold else r["set"]
        lines.append(f"| {s} | {r['decoder']} | {r['utterances']} | {_pct(r['wer_offline'])} | "
                     f"{_pct(r['cer_offline'])} | {_pct(r['wer_chunked'])} | {_pct(r['cer_chunked'])} | "
                     f"{'–' if rel != rel else f'{100 * rel:+.0f}%'} |")
    skipped = [f"{r['set']} ({r['decoder']}): {r['skipped']}" for r in result["rows"] if r.get("skipped")]
    if skipped:
        lines += ["", "Utterances skipped (unreadable or too short; not in the figures): " + "; ".join(skipped) + "."]
    if result.get("unscored"):
        lines += ["", "Not scored (not one utterance could be decoded):", ""] + [f"- {u}" for u in result["unscored"]]
    lines += ["", "Targets (greedy WER offline): " + ", ".join(f"{k} ≤ {100 * v:.0f}%" for k, v in TARGETS.items())
              + "; chunked within 15% relative of offline everywhere. The beam search + LM figure is stated beside "
              "them; no target is set on it.", ""]
    for t in result["targets"]:
        lines.append(f"- {t}")
    if result.get("lm"):
        o = result["lm"]
        lines += ["", f"LM: word {o['order']}-gram (KenLM lmplz) from the {o['lm_text_lines']} lines of "
                  f"{o['lm_text']}, weight {o['weight']} for every set ({o['weight_rule']})."]
    if result.get("text_diagnostics"):
        lines += [""] + _diagnostics_table(result)
    oov = _oov_table(result)
    lines += [""] + oov if oov else []
    load = result.get("load_average")
    lines += ["", f"Wall time of this evaluation: {result['seconds']:.0f} s on {result['threads']} thread(s)"
              + (f" (load average {load['start'][0]:.1f} at the start, {load['end'][0]:.1f} at the end)." if load
                 else "."), ""]
    return "\n".join(lines)


def target_lines(rows: list[dict]) -> list[str]:
    """The targets judged on greedy offline WER (what they mean), each with the set's beam + LM figure beside it."""
    out = []
    totals = {r["set"]: r for r in rows if r["decoder"] == "greedy" and ":" not in r["set"]}
    with_lm = {r["set"]: r for r in rows if "LM (" in r["decoder"] and ":" not in r["set"]}
    for key, label in ENGINE_SETS:
        r = totals.get(label)
        if r is None or key not in TARGETS:
            continue
        ok = r["wer_offline"] <= TARGETS[key]
        lm = with_lm.get(label)
        beside = (f" ({lm['decoder']}: {_pct(lm['wer_offline'])} offline; no target on it)" if lm else "")
        out.append(f"{label}: greedy WER {_pct(r['wer_offline'])} offline, target ≤ {100 * TARGETS[key]:.0f}%: "
                   f"{'met' if ok else 'MISSED'}{beside}")
    for r in totals.values():
        if r["wer_offline"]:
            rel = r["wer_chunked"] / r["wer_offline"] - 1
            out.append(f"{r['set']}: greedy chunked {100 * rel:+.0f}% relative to offline, target ≤ +15%: "
                       f"{'met' if rel <= 0.15 else 'MISSED'}")
    return out


def _test_sets(args) -> list[tuple[Path, str, bool]]:
    """(manifest, label, per voice) of every test set there is; refuses a missing --real or --test-dir."""
    if not args.test_dir.is_dir():
        raise SystemExit(f"--test-dir {args.test_dir}: not a directory (expected a `slimasr data synth` output)")
    sets = []
    for key, label in ENGINE_SETS:
        m = args.test_dir / f"test_{key}.jsonl"
        if not m.is_file() or not m.read_text(encoding="utf-8").strip():
            print(f"{m}: missing or empty, skipped")
            continue
        sets.append((m, label, key == "espeak"))
    if args.real is not None:
        real = args.real / "real.jsonl"
        if not real.is_file():
            raise SystemExit(f"--real {args.real}: no real.jsonl (build it with `slimasr data real-test`)")
        sets.append((real, REAL_SET, True))
    if not sets:
        raise SystemExit(f"--test-dir {args.test_dir}: no test_*.jsonl with utterances and no --real")
    return sets


def _known_texts(args) -> list[KnownText]:
    """The LM text and the transcripts of all training manifests (those given), read before any decoding."""
    from slimasr.data.manifest import ManifestError, read_manifest

    known = []
    if args.lm_text is not None:
        if not args.lm_text.is_file():
            raise SystemExit(f"--lm-text {args.lm_text}: no such file (expected the LM training text)")
        known.append(KnownText.from_texts("lm_text", args.lm_text.read_text(encoding="utf-8").splitlines()))
    texts: list[str] = []
    for path in args.train or []:
        bad: list = []
        try:
            rows = read_manifest(path, resolve=False, skipped=bad)
        except ManifestError as e:
            raise SystemExit(f"--train: {e}") from None
        if not rows:
            raise SystemExit(f"--train {path}: no rows (expected a training manifest, JSON lines with text)")
        if bad:
            print(f"--train {path}: {len(bad)} malformed row(s) left out, first: {bad[0]}")
        texts += [r["text"] for r in rows]
    if args.train:
        known.append(KnownText.from_texts("train", texts))
    return known


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model .pt (default: the embedded default model)")
    ap.add_argument("--test-dir", required=True, type=Path, help="a `data synth` directory with test_*.jsonl")
    ap.add_argument("--real", type=Path, default=None, help="a `data real-test` directory (real.jsonl)")
    ap.add_argument("--lm-text", type=Path, default=None,
                    help="LM training text (training sentences only): beam search + a word 4-gram LM on every set")
    ap.add_argument("--train", type=Path, action="append", default=None,
                    help="a training manifest of the model (repeat it for every training stage): leak check and OOV "
                         "words against their transcripts")
    ap.add_argument("--name", required=True,
                    help="result name: eval_NAME.json and eval_NAME.md (an existing one is replaced)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/default_model"), help="output directory")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name):
        raise SystemExit(f"--name {args.name!r}: expected a file-name part (letters, digits, _ . -), no folders")
    if args.threads < 1:
        raise SystemExit(f"--threads {args.threads}: expected a positive integer")
    if args.out.exists() and not args.out.is_dir():
        raise SystemExit(f"--out {args.out}: is a file (expected a directory for eval_{args.name}.json/.md)")
    sets = _test_sets(args)
    known = _known_texts(args)

    from slimasr.cli.decode import torch_threads

    torch_threads(args.threads)  # before torch is imported: its OpenMP threads sleep while they wait
    from slimasr.data.manifest import read_manifest
    from slimasr.model import load_model
    from slimasr.runtime.decoders import DecodingConfig

    t0, load_start = time.perf_counter(), os.getloadavg()
    try:
        model = load_model(args.model)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"--model: {e}") from None
    diagnostics = {label: text_diagnostics([r["text"] for r in read_manifest(m, resolve=False, skipped=[])], known)
                   for m, label, _ in sets}
    leaks = leak_lines(diagnostics)
    for w in leaks:
        print(f"WARNING: {w}", file=sys.stderr)
    by_name = {k.name: k for k in known}
    oov_against = by_name.get("train", by_name.get("lm_text"))       # the training transcripts, else the LM text
    vocabulary = None if oov_against is None else oov_against.words
    model.eval()
    rows: list[dict] = []
    unscored: list[str] = []
    lm_info = None
    with tempfile.TemporaryDirectory() as tmp:     # the LM is rebuilt from the text on every run
        with_lm = None
        if args.lm_text is not None:
            from slimasr.lm import KenLMToolMissing, build_lm

            try:
                lm = build_lm(args.lm_text, Path(tmp) / "lm.arpa", order=LM_ORDER)
            except (KenLMToolMissing, ValueError) as e:      # no lmplz; a text without a usable sentence
                raise SystemExit(f"--lm-text: {e}") from None
            with_lm = DecodingConfig.paper(lm)
            lm_info = {"lm_text": str(args.lm_text), "lm_text_lines": len(args.lm_text.read_text(
                encoding="utf-8").splitlines()), "order": LM_ORDER, "weight": with_lm.lm_weight,
                "weight_rule": "the paper's weight, DecodingConfig.paper; fixed before any test set was decoded"}
        for m, label, per_voice in sets:
            decoders = [DecodingConfig()]
            if label == REAL_SET:
                decoders.append(DecodingConfig(method="beam", beam_size=100))
            if with_lm is not None:
                decoders.append(with_lm)
            for d in decoders:
                try:
                    rows += score_rows(model, m, label, d, per_voice, vocabulary)
                except ValueError as e:       # not one utterance of the set could be decoded: name it, go on
                    unscored.append(f"{label}, {decoder_name(d)}: {e}")
                    print(f"not scored: {unscored[-1]}", file=sys.stderr)
                    continue
                print(json.dumps(rows[-1]))
    if not rows:
        raise SystemExit("no test set could be decoded: " + "; ".join(unscored))
    result = {"name": args.name, "model": args.model or "embedded default (src/slimasr/assets/default/model.pt)",
              "command": "`python benchmarks/default_model_eval.py " + " ".join(
                  f"--{k.replace('_', '-')} {x}" for k, v in vars(args).items() if v is not None
                  for x in (v if isinstance(v, list) else [v])) + "`",
              "rows": rows, "unscored": unscored, "targets": target_lines(rows), "lm": lm_info,
              "known_texts": {k.name: (str(args.lm_text) if k.name == "lm_text" else ", ".join(map(str, args.train)))
                              for k in known},
              "text_diagnostics": diagnostics, "leaks": leaks,
              "oov_vocabulary": (None if oov_against is None else
                                 "training transcripts" if oov_against.name == "train" else "LM text"),
              "threads": args.threads, "seconds": time.perf_counter() - t0,
              "load_average": {"start": load_start, "end": os.getloadavg()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"eval_{args.name}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (args.out / f"eval_{args.name}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
