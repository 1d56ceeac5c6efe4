"""Build the toolkit-import fixtures in ``tests/fixtures/import/`` with each toolkit's own code.

Every case is a tiny Conformer (2-3 layers, d_model 64, a 64-piece SentencePiece vocabulary) built with the
toolkit's OWN classes, with every parameter and buffer that matters randomised (LayerNorm affines, BatchNorm running
statistics, positional biases, CMVN statistics, CTC head), saved in the toolkit's native format, together with
reference features, CTC log-probs and greedy texts computed by the toolkit's own code on two short synthetic
utterances (espeak-ng, 16 kHz). slimasr is never imported here; the fixtures are read by slimasr's import tests.

Pinned toolkit versions (the environment that produced the committed fixtures):
    espnet==202511, torch==2.11.0, torchaudio==2.11.0, nemo-toolkit==3.0.0 (installed with --no-deps),
    sentencepiece==0.2.0, numpy 2.4.6; the full frozen set is ``requirements-toolkits.txt`` beside this file.
    WeNet is not on PyPI: source snapshot of github.com/wenet-e2e/wenet at commit
    015469960db73eb19c49a48c020d5ac9db69bae5 (2025-12-19), imported in place from ``--wenet-src``.

Create the toolkit environment (outside the repository, never slimasr's own environment)::

    python3.11 -m venv TOOLKITS/venv
    TOOLKITS/venv/bin/pip install --no-deps -r tools/import_fixtures/requirements-toolkits.txt
    git clone https://github.com/wenet-e2e/wenet TOOLKITS/wenet
    git -C TOOLKITS/wenet checkout 015469960db73eb19c49a48c020d5ac9db69bae5

Regenerate every case (about two minutes on two CPU cores; needs espeak-ng only when a wave is missing)::

    OMP_NUM_THREADS=1 TOOLKITS/venv/bin/python tools/import_fixtures/make_fixtures.py \
        --wenet-src TOOLKITS/wenet [--cases wenet_u2pp_causal,espnet_conformer,...]

Each case directory holds the model files in the toolkit's native layout, ``reference.npz`` (float32 arrays keyed
``<utt>.<name>``, token ids int32) and ``manifest.json`` (toolkit, version, source commit, config summary, front-end
settings, special ids, greedy texts, top-1/top-2 margins, and the list of arrays). The fixture format is described
in ``tests/fixtures/import/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import typing
from pathlib import Path

import numpy as np
import soundfile
import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "import"
WENET_COMMIT = "015469960db73eb19c49a48c020d5ac9db69bae5"

# Two short utterances, synthesised with espeak-ng and resampled to 16 kHz (16-bit PCM, committed).
UTTERANCES = {
    "utt0": "open the window please",
    "utt1": "the quick brown fox jumps",
}

# Text the tiny SentencePiece models are trained on (upper case, as WeNet's BPE tokenizer upper-cases its input).
SPM_TEXT = """\
THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG
OPEN THE WINDOW PLEASE AND LET THE FRESH AIR IN
A SMALL MODEL CAN STILL SPEAK CLEARLY WHEN IT IS PRUNED WITH CARE
STREAMING SPEECH RECOGNITION NEEDS A CAUSAL CONVOLUTION AND A SHORT CACHE
SHE SELLS SEA SHELLS BY THE SEA SHORE EVERY MORNING
THE WEATHER TODAY IS COLD BUT THE SUN IS BRIGHT
WE EXPORT THE ENCODER AND SERVE IT OVER A WEB SOCKET
PLEASE CALL STELLA ASK HER TO BRING THESE THINGS WITH HER FROM THE STORE
SIX SPOONS OF FRESH SNOW PEAS FIVE THICK SLABS OF BLUE CHEESE
MAYBE A SNACK FOR HER BROTHER BOB
"""

VOCAB_PIECES = 60  # SentencePiece vocabulary size; the toolkits add blank (and unk / sos/eos) around it


# ----------------------------------------------------------------------------------------------------------------
# helpers shared by every toolkit


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def synth_audio(audio_dir: Path) -> dict[str, Path]:
    """Return ``{utt: wav path}``; synthesise missing waves with espeak-ng and resample them to 16 kHz (soxr)."""
    import soxr

    audio_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for utt, text in UTTERANCES.items():
        path = audio_dir / f"{utt}.wav"
        if not path.exists():
            with tempfile.TemporaryDirectory() as tmp:
                raw = Path(tmp) / "raw.wav"
                subprocess.run(["espeak-ng", "-v", "en-us", "-s", "165", "-w", str(raw), text], check=True)
                wav, sr = soundfile.read(raw, dtype="float32")
            wav = soxr.resample(wav, sr, 16000)
            # espeak-ng pads with digital silence (log(0) in every fbank bin); add a fixed low noise floor
            noise = np.random.default_rng(int(utt[-1])).standard_normal(wav.shape).astype(np.float32)
            wav = np.clip(wav + 3e-4 * noise, -1.0, 32767 / 32768)
            soundfile.write(path, wav, 16000, subtype="PCM_16")
        paths[utt] = path
    (audio_dir / "texts.json").write_text(json.dumps(UTTERANCES, indent=1) + "\n")
    return paths


def read_wav(path: Path) -> np.ndarray:
    """(N,) float32 samples in [-1, 1) (torchaudio 2.11 no longer decodes files itself)."""
    wav, sr = soundfile.read(path, dtype="float32")
    assert sr == 16000 and wav.ndim == 1, (path, sr, wav.shape)
    return wav


def train_spm(prefix: Path, vocab_size: int = VOCAB_PIECES, text: str = SPM_TEXT) -> Path:
    """Train a tiny unigram SentencePiece model (unk 0, no bos/eos, identity normalisation).

    Returns ``prefix.model``.
    """
    import sentencepiece as spm

    prefix = prefix.resolve()
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        Path("text.txt").write_text(text)  # a relative name: the model records it, keep the file reproducible
        # relative names only: the model records both, and must not record where it was built
        spm.SentencePieceTrainer.train(
            input="text.txt", model_prefix=prefix.name, vocab_size=vocab_size, model_type="unigram",
            character_coverage=1.0, input_sentence_size=100000, bos_id=-1, eos_id=-1, unk_id=0,
            num_threads=1, minloglevel=2, seed_sentencepiece_size=10000,
            normalization_rule_name="identity")  # no NFKC table: the model file stays a few KB
        prefix.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f"{prefix.name}.model", prefix.with_suffix(".model"))
    return prefix.with_suffix(".model")


def randomize_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Randomise every parameter and buffer that default initialisation leaves at a trivial value.

    LayerNorm / BatchNorm affines around (1, 0), BatchNorm running mean / var, every bias, attention positional
    biases (pos_bias_u / pos_bias_v), and a jitter on every weight matrix, so that folding, eps and bias mistakes
    show up in the log-probs.
    """

    def normal(t: torch.Tensor, mean: float, std: float) -> None:
        t.copy_(mean + std * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype))

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                if module.weight is not None:
                    normal(module.weight, 1.0, 0.25)
                    normal(module.bias, 0.0, 0.1)
            elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                normal(module.weight, 1.0, 0.25)
                normal(module.bias, 0.0, 0.1)
                normal(module.running_mean, 0.0, 0.5)
                module.running_var.copy_(torch.exp(0.6 * torch.randn(module.running_var.shape, generator=gen)))
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("pos_bias_u", "pos_bias_v"):
                normal(p, 0.0, 0.3)
            elif leaf == "bias" and p.ndim == 1 and not _is_norm_param(model, name):
                normal(p, 0.0, 0.05)
            elif p.ndim >= 2:
                p.mul_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))


def calibrate_ctc_head_(head: torch.nn.Module, frames: torch.Tensor, gen: torch.Generator, blank: int,
                        suppress: tuple[int, ...] = (), rank: int = 8, gain: float = 6.0) -> None:
    """Give a random model's CTC head time-varying, well-separated outputs.

    A random encoder's output is dominated by a component that is the same on every frame, so a random head emits
    one token everywhere (a greedy text that cannot catch anything). The head is set to a random map of the
    encoder output's ``rank`` leading time-varying directions (whitened, regularised), plus a random bias:
    logits ~ N(0, gain^2) per frame and class, blank raised by one gain (CTC output is mostly blank), the
    ``suppress`` ids (unk, sos/eos: never emitted by a trained CTC head) lowered by six. ``head`` is an
    ``nn.Linear(D, V)`` or a 1x1 ``nn.Conv1d(D, V)``; ``frames`` is (N, D) encoder output over the utterances.
    """
    x = frames.double()
    mu = x.mean(0)
    eigval, eigvec = torch.linalg.eigh(torch.cov((x - mu).T))
    eigval, eigvec = eigval.flip(0)[:rank], eigvec.flip(1)[:, :rank]
    proj = eigvec / torch.sqrt(eigval + 0.05 * eigval[0])  # (D, rank)
    weight = gain / rank ** 0.5 * torch.randn(head.weight.shape[0], rank, generator=gen, dtype=torch.float64) @ proj.T
    bias = -weight @ mu + 0.5 * torch.randn(head.weight.shape[0], generator=gen, dtype=torch.float64)
    bias[blank] += gain
    bias[list(suppress)] -= 6 * gain
    with torch.no_grad():
        head.weight.copy_(weight.reshape(head.weight.shape).to(head.weight.dtype))
        head.bias.copy_(bias.to(head.bias.dtype))


def _is_norm_param(model: torch.nn.Module, name: str) -> bool:
    module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    return isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm))


def margins(log_probs: np.ndarray) -> np.ndarray:
    """(T,) top-1 minus top-2 log-prob per frame."""
    top2 = np.sort(log_probs, axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def feature_noise_flips(log_probs_of, feats: dict[str, torch.Tensor], blank: int, sigmas=(1e-4, 1e-3),
                        draws: int = 8) -> dict:
    """How often Gaussian noise of std sigma on the front-end output changes the greedy ids (out of ``draws``).

    ``log_probs_of`` maps (T, F) features (the ``feats`` reference) to (T', V) log-probs with the toolkit's model.
    Tells a test how close a re-implemented front-end must be before greedy texts can be compared.
    """
    gen = torch.Generator().manual_seed(0)

    def greedy(lp: torch.Tensor) -> list[int]:
        best = lp.argmax(-1).tolist()
        return [t for i, t in enumerate(best) if t != blank and (i == 0 or t != best[i - 1])]

    out = {}
    with torch.no_grad():
        for utt, x in feats.items():
            ref = greedy(log_probs_of(x))
            out[utt] = {f"{sigma:g}": sum(greedy(log_probs_of(x + sigma * torch.randn(x.shape, generator=gen)))
                                          != ref for _ in range(draws)) for sigma in sigmas}
            out[utt]["draws"] = draws
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def f32(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def write_case(case_dir: Path, arrays: dict[str, np.ndarray], manifest: dict) -> None:
    """Write ``reference.npz`` and ``manifest.json`` (with the list of arrays and the model files' digests)."""
    np.savez_compressed(case_dir / "reference.npz", **arrays)
    manifest["arrays"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in sorted(arrays.items())}
    manifest["files"] = {
        str(p.relative_to(case_dir)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
        for p in sorted(case_dir.rglob("*")) if p.is_file() and p.name not in ("manifest.json", "reference.npz")
    }
    (case_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    size = sum(p.stat().st_size for p in case_dir.rglob("*") if p.is_file())
    _log(f"{case_dir.name}: {size / 1024:.0f} KiB")


def base_manifest(case: str, toolkit: str, toolkit_version: str, seed: int, res: dict, flips: dict,
                  waves: dict[str, Path]) -> dict:
    """The manifest fields every case has; each case adds its model files, config, front-end and references."""
    return {
        "case": case,
        "toolkit": toolkit,
        "toolkit_version": toolkit_version,
        "generator": "tools/import_fixtures/make_fixtures.py",
        "versions": versions(),
        "seed": seed,
        "utterances": {utt: {"wav": f"../audio/{utt}.wav", "text": UTTERANCES[utt]} for utt in waves},
        "greedy_texts": res["texts"],
        "min_margin": {k: round(float(v.min()), 4) for k, v in res["margins"].items()},
        "feature_noise_flips": flips,
    }


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def pick_seed(build, seeds, min_margin: float):
    """Build with each seed until every utterance's smallest greedy margin is >= min_margin; else the best one.

    Only seeds whose greedy texts have at least 5 tokens count; inter-CTC margins are recorded, not selected on
    (the CTC head is shared and calibrated on the final layer). ``build(seed)`` returns a dict with "margins"
    ({key: (T,) margins}) and "ids" ({utt: greedy ids}).
    """
    best = None
    for seed in seeds:
        result = build(seed)
        worst = min(float(m.min()) for k, m in result["margins"].items() if "interctc" not in k)
        shortest = min(len(ids) for ids in result["ids"].values())
        _log(f"  seed {seed}: smallest top-1/top-2 margin {worst:.3f}, shortest greedy text {shortest} tokens")
        if shortest >= 5 and (best is None or worst > best[0]):
            best = (worst, seed, result)
        if best is not None and worst >= min_margin:
            break
    if best is None:
        raise RuntimeError("no seed gave a greedy text of at least 5 tokens")
    return best[1], best[2]


def versions() -> dict:
    from importlib.metadata import version

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "torchaudio", "numpy", "sentencepiece", "espnet", "nemo-toolkit"):
        with contextlib.suppress(Exception):
            out[pkg] = version(pkg)
    return out


# ----------------------------------------------------------------------------------------------------------------
# WeNet (source snapshot, imported in place)


def import_wenet(src: Path):
    """Import WeNet's model code from a source tree without its CLI, whisper or langid.

    ``wenet/__init__`` imports the CLI (and through it whisper / langid): the package is registered without running
    it, whisper and langid are stubbed (only read at import time), and the squeezeformer module that imports
    ``Union`` / ``Optional`` / ``Tensor`` from ``torch.nn.modules.conv`` gets them back.
    """
    pkg = types.ModuleType("wenet")
    pkg.__path__ = [str(src / "wenet")]
    sys.modules.setdefault("wenet", pkg)
    for name in ("whisper", "whisper.tokenizer", "langid", "langid.langid"):
        stub = types.ModuleType(name)
        stub.__path__ = []
        sys.modules.setdefault(name, stub)
    sys.modules["whisper.tokenizer"].LANGUAGES = {}  # wenet/utils/common.py reads its keys at import time
    # wenet/dataset/processor.py builds a language identifier at import time (used only by its language filter)
    sys.modules["langid.langid"].LanguageIdentifier = types.SimpleNamespace(from_modelstring=lambda *a, **k: None)
    sys.modules["langid.langid"].model = None
    conv = torch.nn.modules.conv
    for attr, value in (("Union", typing.Union), ("Optional", typing.Optional), ("Tensor", torch.Tensor)):
        if not hasattr(conv, attr):
            setattr(conv, attr, value)
    from wenet.utils.init_model import init_model

    return init_model


def wenet_fbank(wav: np.ndarray) -> torch.Tensor:
    """(T, 80) features from WeNet's own ``wenet/dataset/processor.py:compute_fbank`` with the train.yaml
    fbank_conf and dither 0 (inference): torchaudio kaldi.fbank of the wave scaled by 2^15, povey window,
    energy_floor 0."""
    from wenet.dataset.processor import compute_fbank

    sample = {"key": "utt", "wav": torch.from_numpy(wav).unsqueeze(0), "sample_rate": 16000}
    return compute_fbank(sample, num_mel_bins=80, frame_length=25, frame_shift=10, dither=0.0)["feat"]


def write_cmvn(model_dir: Path, feats: list[torch.Tensor], gen: torch.Generator, json_form: bool,
               kaldi_form: bool) -> None:
    """Random but plausible global CMVN statistics (sums over a fictitious 2345-frame corpus)."""
    stacked = torch.cat(feats).double()
    n = 2345
    mean = stacked.mean(0) + 0.5 * torch.randn(stacked.shape[1], generator=gen, dtype=torch.float64)
    std = stacked.std(0) * torch.exp(0.3 * torch.randn(stacked.shape[1], generator=gen, dtype=torch.float64))
    mean_stat = (mean * n).tolist()
    var_stat = ((std ** 2 + mean ** 2) * n).tolist()
    if json_form:
        (model_dir / "global_cmvn").write_text(json.dumps({"mean_stat": mean_stat, "var_stat": var_stat,
                                                           "frame_num": n}))
    if kaldi_form:
        name = "global_cmvn.kaldi" if json_form else "global_cmvn"
        rows = " ".join(repr(v) for v in mean_stat) + f" {n}\n  " + " ".join(repr(v) for v in var_stat) + " 0 ]"
        (model_dir / name).write_text(" [\n  " + rows + "\n")


WENET_COMMON = {
    "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.0, "input_layer": "conv2d",
    "normalize_before": True, "use_cnn_module": True, "activation_type": "swish", "pos_enc_layer_type": "rel_pos",
    "selfattention_layer_type": "rel_selfattn",
}
WENET_DATASET_CONF = {
    "filter_conf": {"max_length": 40960, "min_length": 0, "token_max_length": 200, "token_min_length": 1},
    "resample_conf": {"resample_rate": 16000}, "speed_perturb": True,
    "fbank_conf": {"num_mel_bins": 80, "frame_shift": 10, "frame_length": 25, "dither": 1.0},
    "spec_aug": True, "spec_aug_conf": {"num_t_mask": 2, "num_f_mask": 2, "max_t": 50, "max_f": 10},
    "shuffle": True, "sort": True, "batch_conf": {"batch_type": "static", "batch_size": 16},
}


def wenet_units(kind: str, spm_model: Path | None) -> tuple[list[str], dict]:
    """units.txt symbols in id order, as WeNet's recipes write them, and the special ids.

    ``bpe`` (LibriSpeech recipe at the pinned commit): <blank> 0, <unk> 1, <sos/eos> 2, then the pieces that occur in
    the encoded training text, sorted, from 3 -- so unit ids are NOT SentencePiece ids. ``char`` (older recipes):
    <blank> 0, <unk> 1, the characters sorted (space written as the piece mark), <sos/eos> last.
    """
    if kind == "bpe":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(spm_model))
        pieces = sorted({p for line in SPM_TEXT.splitlines() for p in sp.encode(line, out_type=str)})
        units = ["<blank>", "<unk>", "<sos/eos>"] + pieces
        return units, {"blank": 0, "unk": 1, "sos": 2, "eos": 2}
    chars = sorted({"\u2581" if c == " " else c for c in SPM_TEXT.replace("\n", "")})
    units = ["<blank>", "<unk>"] + chars + ["<sos/eos>"]
    return units, {"blank": 0, "unk": 1, "sos": len(units) - 1, "eos": len(units) - 1}


def make_wenet(case: str, wenet_src: Path, waves: dict[str, Path]) -> None:
    """WeNet cases: ``wenet_u2pp_causal`` (U2++, causal LayerNorm conv, even kernel, BPE, JSON CMVN, sos/eos 2,
    streaming references) and ``wenet_conformer_bn`` (older layout: BatchNorm conv, symmetric kernel, char units,
    Kaldi-text CMVN, sos/eos last, offline references)."""
    init_model = import_wenet(wenet_src)
    from wenet.text.bpe_tokenizer import BpeTokenizer
    from wenet.text.char_tokenizer import CharTokenizer
    from wenet.models.transformer.search import ctc_greedy_search

    u2pp = case == "wenet_u2pp_causal"
    case_dir = fresh_dir(OUT / case)
    model_dir = case_dir / "model"
    model_dir.mkdir()
    feats = {utt: wenet_fbank(read_wav(p)) for utt, p in waves.items()}

    spm_model = None
    if u2pp:
        spm_model = train_spm(model_dir / f"tiny_unigram{VOCAB_PIECES}")
    units, special = wenet_units("bpe" if u2pp else "char", spm_model)
    (model_dir / "units.txt").write_text("".join(f"{u} {i}\n" for i, u in enumerate(units)))
    cmvn_gen = torch.Generator().manual_seed(1234)
    write_cmvn(model_dir, list(feats.values()), cmvn_gen, json_form=u2pp, kaldi_form=True)

    encoder_conf = dict(WENET_COMMON, output_size=64, attention_heads=4, linear_units=128)
    if u2pp:
        encoder_conf.update(num_blocks=3, cnn_module_kernel=8, causal=True, use_dynamic_chunk=True,
                            cnn_module_norm="layer_norm", use_dynamic_left_chunk=False)
        config = {
            "encoder": "conformer", "encoder_conf": encoder_conf,
            "decoder": "bitransformer",
            "decoder_conf": {"attention_heads": 4, "linear_units": 128, "num_blocks": 1, "r_num_blocks": 1,
                             "dropout_rate": 0.1, "positional_dropout_rate": 0.1,
                             "self_attention_dropout_rate": 0.1, "src_attention_dropout_rate": 0.1},
            "tokenizer": "bpe",
            "tokenizer_conf": {"symbol_table_path": "data/lang_char/units.txt",
                               "split_with_space": False,
                               "bpe_path": f"data/lang_char/tiny_unigram{VOCAB_PIECES}.model",
                               "non_lang_syms_path": None, "is_multilingual": False, "num_languages": 1,
                               "special_tokens": {"<blank>": 0, "<unk>": 1, "<sos>": 2, "<eos>": 2}},
            "ctc": "ctc", "ctc_conf": {"ctc_blank_id": 0},
            "cmvn": "global_cmvn", "cmvn_conf": {"cmvn_file": "data/train/global_cmvn", "is_json_cmvn": True},
            "model": "asr_model",
            "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1, "length_normalized_loss": False,
                           "reverse_weight": 0.3},
        }
    else:
        encoder_conf.update(num_blocks=2, cnn_module_kernel=7, causal=False, use_dynamic_chunk=False,
                            cnn_module_norm="batch_norm")
        config = {
            "encoder": "conformer", "encoder_conf": encoder_conf,
            "decoder": "transformer",
            "decoder_conf": {"attention_heads": 4, "linear_units": 128, "num_blocks": 1, "dropout_rate": 0.1,
                             "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.0,
                             "src_attention_dropout_rate": 0.0},
            "tokenizer": "char",
            "tokenizer_conf": {"symbol_table_path": "data/dict/units.txt", "split_with_space": False,
                               "bpe_path": None, "non_lang_syms_path": None, "is_multilingual": False,
                               "num_languages": 1},
            "ctc": "ctc", "ctc_conf": {"ctc_blank_id": 0},
            "cmvn": "global_cmvn", "cmvn_conf": {"cmvn_file": "data/train/global_cmvn", "is_json_cmvn": False},
            "model": "asr_model",
            "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1, "length_normalized_loss": False},
        }
    config.update({
        "dataset": "asr", "dataset_conf": WENET_DATASET_CONF, "grad_clip": 5, "accum_grad": 1, "max_epoch": 100,
        "log_interval": 100, "optim": "adam", "optim_conf": {"lr": 0.001}, "scheduler": "warmuplr",
        "scheduler_conf": {"warmup_steps": 25000}, "input_dim": 80, "output_dim": len(units),
    })
    import yaml

    (model_dir / "train.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    # WeNet reads the recorded paths; point them at the case's files for building and decoding here.
    local = copy.deepcopy(config)
    local["cmvn_conf"]["cmvn_file"] = str(model_dir / "global_cmvn")
    local["tokenizer_conf"]["symbol_table_path"] = str(model_dir / "units.txt")
    if u2pp:
        local["tokenizer_conf"]["bpe_path"] = str(spm_model)
        tokenizer = BpeTokenizer(str(spm_model), str(model_dir / "units.txt"))
    else:
        tokenizer = CharTokenizer(str(model_dir / "units.txt"), None, split_with_space=False)

    def build(seed: int) -> dict:
        torch.manual_seed(seed)
        model, _ = init_model(argparse.Namespace(), copy.deepcopy(local))
        randomize_(model, torch.Generator().manual_seed(seed))
        model.eval()
        with torch.no_grad():
            # decoding_chunk_size -1: full context (0, the default, draws a random chunk size even in eval mode)
            frames = [model.encoder(x.unsqueeze(0), torch.tensor([x.shape[0]]), -1, -1)[0][0] for x in feats.values()]
        calibrate_ctc_head_(model.ctc.ctc_lo, torch.cat(frames), torch.Generator().manual_seed(seed), blank=0,
                            suppress=(special["unk"], special["sos"]))
        res = {"model": model, "arrays": {}, "margins": {}, "texts": {}, "ids": {}}
        with torch.no_grad():
            for utt, x in feats.items():
                xs, lens = x.unsqueeze(0), torch.tensor([x.shape[0]])
                enc, mask = model.encoder(xs, lens, decoding_chunk_size=-1, num_decoding_left_chunks=-1)
                lp = model.ctc_logprobs(enc)
                hyp = ctc_greedy_search(lp, mask.squeeze(1).sum(1), 0)[0].tokens
                res["arrays"][f"{utt}.feats"] = f32(x)
                res["arrays"][f"{utt}.encoder_out"] = f32(enc[0])
                res["arrays"][f"{utt}.log_probs"] = f32(lp[0])
                res["arrays"][f"{utt}.greedy_ids"] = np.asarray(hyp, dtype=np.int32)
                res["margins"][utt] = margins(f32(lp[0]))
                res["ids"][utt] = hyp
                res["texts"][utt] = tokenizer.detokenize(hyp)[0]
                if u2pp:
                    for chunk, left, tag in ((16, 4, "c16_l4"), (8, -1, "c8_lall")):
                        s_enc, s_mask = model.encoder.forward_chunk_by_chunk(xs, chunk, left)
                        s_lp = model.ctc_logprobs(s_enc)
                        s_hyp = ctc_greedy_search(s_lp, s_mask.squeeze(1).sum(1), 0)[0].tokens
                        res["arrays"][f"{utt}.stream_{tag}_log_probs"] = f32(s_lp[0])
                        res["arrays"][f"{utt}.stream_{tag}_greedy_ids"] = np.asarray(s_hyp, dtype=np.int32)
                        res["texts"][f"{utt}.stream_{tag}"] = tokenizer.detokenize(s_hyp)[0]
                        res["margins"][f"{utt}.stream_{tag}"] = margins(f32(s_lp[0]))
                        # the chunk-masked offline forward WeNet trains with, same chunk / left context
                        m_enc, _ = model.encoder(xs, lens, decoding_chunk_size=chunk, num_decoding_left_chunks=left)
                        res["arrays"][f"{utt}.masked_{tag}_log_probs"] = f32(model.ctc_logprobs(m_enc)[0])
        return res

    seed, res = pick_seed(build, range(1, 41), min_margin=0.5)
    model = res["model"]
    flips = feature_noise_flips(
        lambda f: model.ctc_logprobs(model.encoder(f[None], torch.tensor([f.shape[0]]), -1, -1)[0])[0], feats, blank=0)
    # WeNet's sinusoid tables (encoder.embed.pos_enc.pe and the decoders' embed.1.pe, each (1, 5000, D)) are
    # persistent buffers of a real final.pt; they are recomputed at construction and WeNet loads with strict=False,
    # so they are left out here to keep the fixture small (an importer must ignore them when present).
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(".pe")}
    torch.save(state, model_dir / "final.pt")

    # reload check: WeNet's own deployable-dir loader (wenet/cli/model.py: train.yaml, final.pt, global_cmvn,
    # units.txt and the tokenizer files found by base name in the dir) reproduces the references and texts
    from wenet.cli.model import load_model

    reloaded = load_model(str(model_dir))
    reloaded.eval()
    with torch.no_grad():
        for utt, x in feats.items():
            enc, _ = reloaded.encoder(x.unsqueeze(0), torch.tensor([x.shape[0]]), -1, -1)
            assert np.array_equal(f32(reloaded.ctc_logprobs(enc)[0]), res["arrays"][f"{utt}.log_probs"])
            assert reloaded.tokenizer.detokenize(res["ids"][utt])[0] == res["texts"][utt]

    enc = model.encoder
    manifest = base_manifest(case, "wenet", f"git {WENET_COMMIT}", seed, res, flips, waves) | {
        "source": "https://github.com/wenet-e2e/wenet",
        "model_files": {
            "dir": "model",
            "config": "model/train.yaml",
            "checkpoint": "model/final.pt (plain state_dict; includes encoder.global_cmvn.mean/istd buffers; the "
                          "(1, 5000, D) sinusoid tables *.pos_enc.pe / decoder.*.embed.1.pe that a real WeNet "
                          "final.pt also holds are left out for size: ignore them when present)",
            "cmvn": "model/global_cmvn (" + ("WeNet JSON: mean_stat, var_stat, frame_num; model/global_cmvn.kaldi is "
                                              "the same statistics in Kaldi text form" if u2pp else
                                              "Kaldi text form: [ sums... count \\n squares... 0 ]") + ")",
            "units": "model/units.txt ('symbol id' per line)",
            "bpe": f"model/{spm_model.name}" if u2pp else None,
            "recorded_paths_do_not_exist": "train.yaml records data/... paths as a training run would; the files "
                                           "are in the model dir: global_cmvn by that name, the tokenizer_conf "
                                           "files by their base names (as wenet/cli/model.py load_model finds "
                                           "them; this dir loads with it)",
        },
        "config_summary": {
            "encoder": "conformer", "num_blocks": encoder_conf["num_blocks"], "d_model": 64, "heads": 4,
            "ffn": 128, "input_layer": "conv2d (x4, no padding; right context 6)",
            "cnn_module_kernel": encoder_conf["cnn_module_kernel"], "causal": encoder_conf["causal"],
            "cnn_module_norm": encoder_conf["cnn_module_norm"], "layer_norm_eps": 1e-5,
            "conv_norm_eps": 1e-5, "macaron": True, "final_norm": True, "xscale": "sqrt(d_model)",
            "pos_enc": "rel_pos: WeNet variant, no rel_shift; position term of the KEY's absolute position "
                       "(streaming: positions start at offset - cache length)",
            "decoder": config["decoder"], "vocab_size": len(units),
            "subsampling_rate": enc.embed.subsampling_rate, "right_context": enc.embed.right_context,
        },
        "special_ids": special,
        "frontend": {
            "type": "kaldi_fbank (torchaudio.compliance.kaldi.fbank, as wenet/dataset/processor.py compute_fbank)",
            "sample_rate": 16000, "waveform_scale": 32768, "num_mel_bins": 80, "frame_length_ms": 25,
            "frame_shift_ms": 10, "dither": 0.0, "energy_floor": 0.0, "window_type": "povey", "snip_edges": True,
            "low_freq": 20.0, "high_freq": 0.0, "preemphasis_coefficient": 0.97, "remove_dc_offset": True,
            "use_log_fbank": True, "use_energy": False,
            "note": "train.yaml keeps the training dither 1.0; inference uses 0",
            "cmvn": "global, applied inside the encoder: (x - mean) * istd, mean = mean_stat/frame_num, "
                    "istd = 1/sqrt(max(var_stat/frame_num - mean^2, 1e-20)), computed in float64 then cast to "
                    "float32",
        },
        "tokenizer": ("bpe: WeNet upper-cases the text, splits it with the SentencePiece model into pieces and maps "
                      "each piece through units.txt (unit ids are not SentencePiece ids); text = pieces joined, "
                      "'\u2581' -> space, stripped") if u2pp else
                     ("char: one unit per character, space written as '\u2581'; WeNet's own detokenize joins "
                      "the units without replacing '\u2581' (the greedy texts below are WeNet's output)"),
        "references": {
            "feats": "(T, 80) WeNet fbank before CMVN",
            "encoder_out": "(T', 64) encoder output (after after_norm), offline, batch 1",
            "log_probs": "(T', V) CTC log-softmax, offline full context, batch 1 (model.ctc_logprobs)",
            "greedy_ids": "(N,) int32 unit ids of WeNet's ctc_greedy_search",
        },
    }
    if u2pp:
        manifest["references"].update({
            "stream_c16_l4_log_probs": "(T', V) encoder.forward_chunk_by_chunk(feats, 16, 4) then CTC",
            "stream_c8_lall_log_probs": "(T', V) encoder.forward_chunk_by_chunk(feats, 8, -1) then CTC",
            "stream_*_greedy_ids": "greedy ids of the streaming log-probs",
            "masked_c16_l4_log_probs / masked_c8_lall_log_probs": "offline encoder with decoding_chunk_size / "
                                                                  "num_decoding_left_chunks (chunk masks)",
        })
        manifest["stream_vs_masked_max_abs"] = {
            f"{utt}.{tag}": float(np.abs(res["arrays"][f"{utt}.stream_{tag}_log_probs"] -
                                         res["arrays"][f"{utt}.masked_{tag}_log_probs"]).max())
            for utt in waves for tag in ("c16_l4", "c8_lall")}
        manifest["streaming_note"] = ("forward_chunk_by_chunk feeds feature windows of (chunk-1)*4+7 frames with "
                                      "stride chunk*4 (the subsampling recomputes its overlap, no cache) until fewer "
                                      "than 7 frames remain; here its T' equals the offline T'. Attention caches "
                                      "chunk*left_chunks frames (all when -1) of K and V per layer, positions start at "
                                      "offset - cache length; the causal conv left-pads / caches kernel-1 = 7 frames "
                                      "in the module's INPUT domain (before pointwise_conv1, zeros at the start), so "
                                      "a start-of-stream frame becomes GLU(bias), not zero")
    write_case(case_dir, res["arrays"], manifest)


# ----------------------------------------------------------------------------------------------------------------
# ESPnet (espnet2 ASR, Conformer encoder)

ESPNET_EXP = "exp/asr_train_conformer_tiny_raw_en_bpe60"
ESPNET_STATS = "exp/asr_stats_raw_en_bpe60/train/feats_stats.npz"
ESPNET_BPE = "data/en_token_list/bpe_unigram60/bpe.model"


def espnet_train_config(case: str = "espnet_conformer") -> dict:
    """The training config (what a recipe's conf/train_asr_conformer.yaml holds), tiny.

    ``espnet_conformer_legacy`` leaves ``rel_pos_type`` and ``normalize`` at ESPnet's defaults (``legacy``
    relative positions, ``utterance_mvn``), has 2 blocks and no inter-CTC."""
    conf = {
        "encoder": "conformer",
        "encoder_conf": {
            "output_size": 64, "attention_heads": 4, "linear_units": 128, "num_blocks": 3, "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1, "input_layer": "conv2d",
            "normalize_before": True, "macaron_style": True, "rel_pos_type": "latest",
            "pos_enc_layer_type": "rel_pos", "selfattention_layer_type": "rel_selfattn",
            "activation_type": "swish", "use_cnn_module": True, "cnn_module_kernel": 15,
            "interctc_layer_idx": [1, 2], "interctc_use_conditioning": False,
        },
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": 4, "linear_units": 64, "num_blocks": 1, "dropout_rate": 0.1,
                         "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1,
                         "src_attention_dropout_rate": 0.1},
        "model_conf": {"ctc_weight": 0.3, "interctc_weight": 0.5, "lsm_weight": 0.1,
                       "length_normalized_loss": False},
        "frontend_conf": {"n_fft": 512, "win_length": 400, "hop_length": 160},
        "specaug": "specaug",
        "specaug_conf": {"apply_time_warp": True, "time_warp_window": 5, "time_warp_mode": "bicubic",
                         "apply_freq_mask": True, "freq_mask_width_range": [0, 27], "num_freq_mask": 2,
                         "apply_time_mask": True, "time_mask_width_ratio_range": [0.0, 0.05], "num_time_mask": 2},
        "normalize": "global_mvn",
        "normalize_conf": {"stats_file": ESPNET_STATS},
        "optim": "adam", "optim_conf": {"lr": 0.002, "weight_decay": 1.0e-06},
        "scheduler": "warmuplr", "scheduler_conf": {"warmup_steps": 15000},
        "max_epoch": 70, "batch_type": "numel", "batch_bins": 16000000, "accum_grad": 1,
    }
    if case == "espnet_conformer_legacy":
        enc = conf["encoder_conf"]
        del enc["rel_pos_type"], enc["interctc_layer_idx"], enc["interctc_use_conditioning"]
        enc["num_blocks"] = 2
        del conf["model_conf"]["interctc_weight"], conf["normalize"], conf["normalize_conf"]
    return conf


def _espnet_encode(model, xs: torch.Tensor, lens: torch.Tensor):
    """``model.encode`` as (encoder_out, [(layer, inter-CTC hidden)]): ESPnet returns the pair only with inter-CTC."""
    out, _ = model.encode(xs, lens)
    return out if isinstance(out, tuple) else (out, [])


def make_espnet(case: str, waves: dict[str, Path]) -> None:
    """``espnet_conformer``: espnet2 ASR, Conformer (rel_pos_type latest, BatchNorm conv, inter-CTC after layers 1
    and 2), default frontend (STFT + log-mel), global_mvn, BPE; laid out as an espnet_model_zoo archive.
    ``espnet_conformer_legacy``: the same with ESPnet's defaults for the positional variant and normalisation
    (``rel_pos_type: legacy``, ``utterance_mvn``), 2 blocks, no inter-CTC."""
    import yaml
    from espnet2.bin.tokenize_text import tokenize
    from espnet2.tasks.asr import ASRTask
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.text.token_id_converter import TokenIDConverter

    legacy = case == "espnet_conformer_legacy"
    train_config = espnet_train_config(case)
    case_dir = fresh_dir(OUT / case)
    root = case_dir / "model"
    for sub in (ESPNET_EXP, Path(ESPNET_BPE).parent) + (() if legacy else (Path(ESPNET_STATS).parent,)):
        (root / sub).mkdir(parents=True, exist_ok=True)
    bpe = train_spm(root / Path(ESPNET_BPE).with_suffix(""))
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "text"
        text.write_text("".join(f"utt{i} {line}\n" for i, line in enumerate(SPM_TEXT.splitlines())))
        tokens_txt = Path(tmp) / "tokens.txt"
        # as egs2/TEMPLATE/asr1/asr.sh writes the token list (frequency order, blank 0, unk 1, sos/eos last)
        tokenize(input=str(text), output=str(tokens_txt), field="2-", delimiter=None, token_type="bpe",
                 space_symbol="<space>", non_linguistic_symbols=None, bpemodel=str(bpe), log_level="WARNING",
                 write_vocabulary=True, vocabulary_size=0, remove_non_linguistic_symbols=False, cutoff=0,
                 add_symbol=["<blank>:0", "<unk>:1", "<sos/eos>:-1"], cleaner=None, g2p=None,
                 add_nonsplit_symbol=[])
        token_list = tokens_txt.read_text().split("\n")[:-1]

    speech = {utt: torch.from_numpy(read_wav(p)) for utt, p in waves.items()}
    cwd = os.getcwd()
    os.chdir(root)  # ESPnet resolves the config's relative paths (stats, bpe) against the working directory
    try:
        # feats_stats.npz: random but plausible statistics around the real log-mel features of the utterances
        stats_args = ASRTask.get_parser().parse_args(["--output_dir", "unused"])
        stats_args.frontend_conf = train_config["frontend_conf"]
        from espnet2.asr.frontend.default import DefaultFrontend

        frontend = DefaultFrontend(**stats_args.frontend_conf)
        with torch.no_grad():
            logmel = torch.cat([frontend(x.unsqueeze(0), torch.tensor([x.numel()]))[0][0]
                                for x in speech.values()]).double()
        gen = torch.Generator().manual_seed(4321)
        count = 2345
        mean = logmel.mean(0) + 0.5 * torch.randn(logmel.shape[1], generator=gen, dtype=torch.float64)
        std = logmel.std(0) * torch.exp(0.3 * torch.randn(logmel.shape[1], generator=gen, dtype=torch.float64))
        if not legacy:
            np.savez(ESPNET_STATS, count=np.array(count), sum=(mean * count).numpy(),
                     sum_square=((std ** 2 + mean ** 2) * count).numpy())

        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(train_config, f)
        train_yaml = f.name

        def build(seed: int) -> dict:
            args = ASRTask.get_parser().parse_args([
                "--config", train_yaml, "--output_dir", ESPNET_EXP, "--token_type", "bpe",
                "--bpemodel", ESPNET_BPE, "--token_list", "unused", "--train_data_path_and_name_and_type",
                "dump/raw/train/wav.scp,speech,sound", "--train_data_path_and_name_and_type",
                "dump/raw/train/text,text,text", "--train_shape_file", "exp/asr_stats/train/speech_shape",
                "--seed", str(seed)])
            args.token_list = list(token_list)
            torch.manual_seed(seed)
            model = ASRTask.build_model(args)
            randomize_(model, torch.Generator().manual_seed(seed))
            model.eval()
            res = {"model": model, "args": args, "arrays": {}, "margins": {}, "texts": {}, "ids": {}}
            with torch.no_grad():
                outs = {utt: _espnet_encode(model, x.unsqueeze(0), torch.tensor([x.numel()]))
                        for utt, x in speech.items()}
                calibrate_ctc_head_(model.ctc.ctc_lo, torch.cat([o[0][0] for o in outs.values()]),
                                    torch.Generator().manual_seed(seed), blank=0,
                                    suppress=(1, len(token_list) - 1))
                tokenizer = build_tokenizer("bpe", ESPNET_BPE)
                converter = TokenIDConverter(token_list)
                for utt, x in speech.items():
                    xs, lens = x.unsqueeze(0), torch.tensor([x.numel()])
                    feats, feat_lens = model._extract_feats(xs, lens)
                    res["arrays"][f"{utt}.feats"] = f32(feats[0])
                    normed, _ = model.normalize(feats.clone(), feat_lens)
                    res["arrays"][f"{utt}.feats_normalized"] = f32(normed[0])
                    enc, inter = _espnet_encode(model, xs, lens)
                    lp = model.ctc.log_softmax(enc)
                    res["arrays"][f"{utt}.encoder_out"] = f32(enc[0])
                    res["arrays"][f"{utt}.log_probs"] = f32(lp[0])
                    for layer, h in inter:
                        res["arrays"][f"{utt}.interctc_{layer}_log_probs"] = f32(model.ctc.log_softmax(h)[0])
                    best = lp[0].argmax(-1).tolist()
                    hyp = [t for i, t in enumerate(best) if t != 0 and (i == 0 or t != best[i - 1])]
                    res["arrays"][f"{utt}.greedy_ids"] = np.asarray(hyp, dtype=np.int32)
                    res["ids"][utt] = hyp
                    res["texts"][utt] = tokenizer.tokens2text(converter.ids2tokens(hyp))
                    res["margins"][utt] = margins(f32(lp[0]))
                    for layer, h in inter:
                        res["margins"][f"{utt}.interctc_{layer}"] = margins(f32(model.ctc.log_softmax(h)[0]))
            return res

        seed, res = pick_seed(build, range(1, 41), min_margin=0.5)
        model, args = res["model"], res["args"]

        def espnet_log_probs(f: torch.Tensor) -> torch.Tensor:
            lens = torch.tensor([f.shape[0]])
            normed, _ = model.normalize(f[None].clone(), lens)
            enc = model.encoder(normed, lens)[0]
            return model.ctc.log_softmax(enc[0] if isinstance(enc, tuple) else enc)[0]

        flips = feature_noise_flips(espnet_log_probs, {u: torch.from_numpy(res["arrays"][f"{u}.feats"])
                                                       for u in speech}, blank=0)
        torch.save(model.state_dict(), f"{ESPNET_EXP}/model.pth")
        args.config = "conf/train_asr_conformer_tiny.yaml"
        # as AbsTask.main_worker writes it: every argument, token_list expanded
        with open(f"{ESPNET_EXP}/config.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump(vars(args), f, indent=4, sort_keys=False, allow_unicode=True)
        os.unlink(train_yaml)

        # reload check with ESPnet's own loader
        reloaded, _ = ASRTask.build_model_from_file(f"{ESPNET_EXP}/config.yaml", f"{ESPNET_EXP}/model.pth")
        reloaded.eval()
        with torch.no_grad():
            for utt, x in speech.items():
                enc, _ = _espnet_encode(reloaded, x.unsqueeze(0), torch.tensor([x.numel()]))
                got = f32(reloaded.ctc.log_softmax(enc)[0])
                assert np.array_equal(got, res["arrays"][f"{utt}.log_probs"]), np.abs(got - res["arrays"][
                    f"{utt}.log_probs"]).max()
    finally:
        os.chdir(cwd)

    fe = model.frontend
    manifest = base_manifest(case, "espnet", versions().get("espnet"), seed, res, flips, waves) | {
        "model_files": {
            "root": "model (an espnet_model_zoo-style archive root: config.yaml's relative paths resolve here)",
            "config": f"model/{ESPNET_EXP}/config.yaml (every training argument, token_list inline)",
            "checkpoint": f"model/{ESPNET_EXP}/model.pth (plain state_dict)",
            **({} if legacy else {
                "stats": f"model/{ESPNET_STATS} (normalize_conf.stats_file; npz with count, sum, sum_square)"}),
            "bpe": f"model/{ESPNET_BPE} (bpemodel)",
        },
        "config_summary": {
            "encoder": "conformer", "num_blocks": train_config["encoder_conf"]["num_blocks"], "d_model": 64,
            "heads": 4, "ffn": 128,
            "input_layer": "conv2d (x4, no padding)", "cnn_module_kernel": 15, "causal": False,
            "cnn_module_norm": "batch_norm (eps 1e-5)", "layer_norm_eps": 1e-12, "macaron": True,
            "final_norm": True, "xscale": "sqrt(d_model)",
            **({"pos_enc": "rel_pos_type legacy (ESPnet's default): legacy_rel_pos / legacy_rel_selfattn (ESPnet "
                           "LegacyRelPositionalEncoding / LegacyRelPositionMultiHeadedAttention, no rel_shift "
                           "trimming: positions from the reversed table)",
                "interctc_layer_idx": []} if legacy else {
                "pos_enc": "rel_pos_type latest: Transformer-XL relative positions with rel_shift (ESPnet "
                           "RelPositionalEncoding / RelPositionMultiHeadedAttention)",
                "interctc_layer_idx": [1, 2], "interctc_use_conditioning": False,
                "interctc_note": "inter-CTC outputs pass through the encoder's after_norm and the shared "
                                 "ctc.ctc_lo"}),
            "decoder": "transformer (1 block; ignore for CTC)", "vocab_size": len(token_list),
        },
        "special_ids": {"blank": 0, "unk": 1, "sos": len(token_list) - 1, "eos": len(token_list) - 1},
        "frontend": {
            "type": f"espnet2 DefaultFrontend: Stft + LogMel (then {'UtteranceMVN' if legacy else 'GlobalMVN'})",
            "input": "waveform float32 in [-1, 1) (no 32768 scaling)", "sample_rate": 16000,
            "n_fft": fe.stft.n_fft, "win_length": fe.stft.win_length, "hop_length": fe.stft.hop_length,
            "window": "hann (torch.hann_window(win_length), periodic), zero-padded to n_fft centred",
            "center": True, "pad_mode": "reflect", "normalized": False, "onesided": True,
            "power": "real^2 + imag^2", "n_mels": 80, "fmin": 0, "fmax": 8000, "htk": False,
            "mel_matrix": "frontend.logmel.melmat (257, 80) in the state_dict (librosa.filters.mel, slaney norm)",
            "log": "ln(max(mel, 1e-10))",
            "frames": "1 + n_samples // hop_length",
            "normalize": ("utterance_mvn (ESPnet's default; norm_means=True, norm_vars=False): x - the "
                          "utterance's per-bin mean" if legacy else
                          "global_mvn: (x - mean) / std, mean = sum/count, std = sqrt(max(sum_square/count - "
                          "mean^2, 1e-20)) in float64 (normalize.mean / normalize.std in the state_dict, cast to "
                          "float32 at use)"),
        },
        "tokenizer": ("token_list in config.yaml (ESPnet tokenize_text order: <blank>, <unk>, pieces by frequency "
                      "in the training text, <sos/eos>); bpe.model splits text into pieces (no case change); "
                      "text = SentencePiece decode of the pieces"),
        "references": {
            "feats": "(T, 80) log-mel after the frontend, before normalize",
            "feats_normalized": f"(T, 80) after {'utterance_mvn' if legacy else 'global_mvn'} (the encoder's input)",
            "encoder_out": "(T', 64) encoder output after after_norm",
            "log_probs": "(T', V) ctc.log_softmax(encoder_out), batch 1",
            "interctc_<L>_log_probs": "(T', V) ctc.log_softmax of the inter-CTC output after layer L",
            "greedy_ids": "(N,) int32 greedy CTC ids of log_probs (argmax, repeats and blank 0 removed)",
        },
        "batch_note": "batch 1 only: ESPnet's conv module leaks padding into valid frames in padded batches",
    }
    write_case(case_dir, res["arrays"], manifest)


# ----------------------------------------------------------------------------------------------------------------
# NeMo (EncDecCTCModelBPE: FastConformer-CTC and Conformer-CTC)


def nemo_config(case: str, tokenizer_dir: Path) -> dict:
    """Model config as NeMo's examples/asr/conf/{fastconformer/fast-conformer_ctc_bpe,conformer/conformer_ctc_bpe}.yaml
    write it, tiny. The Conformer case also flips ``xscaling`` and ``untie_biases`` (both are options the importer
    must honour)."""
    fast = case == "nemo_fastconformer_ctc"
    encoder = {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 80, "feat_out": -1,
        "n_layers": 2, "d_model": 64,
        "subsampling": "dw_striding" if fast else "striding", "subsampling_factor": 8 if fast else 4,
        "subsampling_conv_channels": 64 if fast else -1, "causal_downsampling": False,
        "ff_expansion_factor": 2, "self_attention_model": "rel_pos", "n_heads": 4, "att_context_size": [-1, -1],
        "xscaling": fast, "untie_biases": fast, "pos_emb_max_len": 5000,
        "conv_kernel_size": 9 if fast else 31, "conv_norm_type": "batch_norm", "conv_context_size": None,
        "dropout": 0.1, "dropout_pre_encoder": 0.1, "dropout_emb": 0.0, "dropout_att": 0.1,
    }
    return {
        "sample_rate": 16000, "log_prediction": True, "ctc_reduction": "mean_batch", "skip_nan_grad": False,
        "train_ds": None, "validation_ds": None, "test_ds": None,
        "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor", "sample_rate": 16000,
            "normalize": "per_feature", "window_size": 0.025, "window_stride": 0.01, "window": "hann",
            "features": 80, "n_fft": 512, "log": True, "frame_splicing": 1, "dither": 1e-05, "pad_to": 0,
            "pad_value": 0.0,
        },
        "spec_augment": {"_target_": "nemo.collections.asr.modules.SpectrogramAugmentation", "freq_masks": 2,
                         "time_masks": 10, "freq_width": 27, "time_width": 0.05},
        "encoder": encoder,
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": None,
                    "num_classes": -1, "vocabulary": []},
        "optim": {"name": "adamw", "lr": 0.001, "betas": [0.9, 0.98], "weight_decay": 0.001},
    }


def make_nemo(case: str, waves: dict[str, Path]) -> None:
    """``nemo_fastconformer_ctc`` (dw_striding x8, 64 channels, xscaling, untied biases, kernel 9; plain tar) and
    ``nemo_conformer_ctc`` (striding x4, no xscaling, shared biases, kernel 31; gzip-compressed tar)."""
    from omegaconf import OmegaConf
    from nemo.collections.asr.models import EncDecCTCModelBPE

    fast = case == "nemo_fastconformer_ctc"
    case_dir = fresh_dir(OUT / case)
    speech = {utt: torch.from_numpy(read_wav(p)) for utt, p in waves.items()}
    # NeMo records the tokenizer dir in the .nemo config: build in a scratch dir and give it as a relative path
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        tok_dir = Path("tokenizer_spe_unigram_v60")
        tok_dir.mkdir()
        import sentencepiece as spm

        model_path = train_spm(tok_dir / "tokenizer")
        sp = spm.SentencePieceProcessor(model_file=str(model_path))
        # as scripts/tokenizers/process_asr_text_tokenizer.py writes them beside tokenizer.model
        (tok_dir / "vocab.txt").write_text("".join(sp.id_to_piece(i) + "\n" for i in range(sp.get_piece_size())))
        cfg = OmegaConf.create(nemo_config(case, tok_dir))

        def build(seed: int) -> dict:
            torch.manual_seed(seed)
            model = EncDecCTCModelBPE(cfg=copy.deepcopy(cfg))
            randomize_(model, torch.Generator().manual_seed(seed))
            model.eval()
            model.preprocessor.featurizer.dither = 0.0  # what NeMo's transcribe() sets for inference
            model.preprocessor.featurizer.pad_to = 0
            blank = model.decoder.num_classes_with_blank - 1
            res = {"model": model, "arrays": {}, "margins": {}, "texts": {}, "ids": {}, "frames": {}}
            with torch.no_grad():
                frames = []
                for x in speech.values():
                    feats, flen = model.preprocessor(input_signal=x.unsqueeze(0), length=torch.tensor([x.numel()]))
                    enc, elen = model.encoder(audio_signal=feats, length=flen)
                    frames.append(enc[0, :, :int(elen)].T)
                calibrate_ctc_head_(model.decoder.decoder_layers[0], torch.cat(frames),
                                    torch.Generator().manual_seed(seed), blank=blank,
                                    suppress=(model.tokenizer.tokenizer.unk_id(),))
                for utt, x in speech.items():
                    xs, lens = x.unsqueeze(0), torch.tensor([x.numel()])
                    feats, flen = model.preprocessor(input_signal=xs, length=lens)
                    enc, elen = model.encoder(audio_signal=feats, length=flen)
                    lp, lp_len, greedy = model.forward(input_signal=xs, input_signal_length=lens)
                    # the preprocessor returns 1 + n // hop frames, the last one masked (pad_value 0) beyond
                    # length = n // hop; the references keep the valid frames only
                    res["arrays"][f"{utt}.feats"] = f32(feats[0, :, :int(flen)].T)
                    res["arrays"][f"{utt}.encoder_out"] = f32(enc[0, :, :int(elen)].T)
                    res["arrays"][f"{utt}.log_probs"] = f32(lp[0, :int(lp_len)])
                    res["frames"][utt] = {"samples": int(x.numel()), "preprocessor_frames": int(feats.shape[-1]),
                                          "valid_frames": int(flen), "encoder_frames": int(elen),
                                          "log_probs_frames_before_trim": int(lp.shape[1])}
                    hyp = model.decoding.ctc_decoder_predictions_tensor(lp, decoder_lengths=lp_len,
                                                                         return_hypotheses=True)[0]
                    frame_ids = [int(i) for i in hyp.y_sequence]  # framewise argmax: fold repeats, drop blank
                    ids = [t for i, t in enumerate(frame_ids) if t != blank and (i == 0 or t != frame_ids[i - 1])]
                    assert hyp.text == model.tokenizer.ids_to_text(ids), (hyp.text, ids)
                    res["arrays"][f"{utt}.greedy_ids"] = np.asarray(ids, dtype=np.int32)
                    res["ids"][utt] = ids
                    res["texts"][utt] = hyp.text
                    res["margins"][utt] = margins(f32(lp[0]))
            return res

        seed, res = pick_seed(build, range(1, 41), min_margin=0.5)
        model = res["model"]

        def nemo_log_probs(f: torch.Tensor) -> torch.Tensor:
            enc, elen = model.encoder(audio_signal=f.T[None], length=torch.tensor([f.shape[0]]))
            return model.decoder(encoder_output=enc)[0, :int(elen)]

        flips = feature_noise_flips(nemo_log_probs, {u: torch.from_numpy(res["arrays"][f"{u}.feats"])
                                                     for u in speech}, blank=model.decoder.num_classes_with_blank - 1)
        model_dir = case_dir / "model"
        model_dir.mkdir()
        nemo_file = model_dir / ("fastconformer_ctc_tiny.nemo" if fast else "conformer_ctc_tiny.nemo")
        model.save_to(str(nemo_file))
    if not fast:
        # pre-1.7 NeMo wrote .nemo files as gzip-compressed tars; restore_from still reads them ("r:gz" fallback)
        with tarfile.open(nemo_file) as src:
            members = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as dst:
            for member, data in members:
                dst.addfile(member, io.BytesIO(data) if data is not None else None)
        nemo_file.write_bytes(buf.getvalue())
        with open(nemo_file, "rb") as f:
            assert f.read(2) == b"\x1f\x8b"

    # reload check with NeMo's own restore_from
    reloaded = EncDecCTCModelBPE.restore_from(str(nemo_file), map_location="cpu")
    reloaded.eval()
    reloaded.preprocessor.featurizer.dither = 0.0
    reloaded.preprocessor.featurizer.pad_to = 0
    with torch.no_grad():
        for utt, x in speech.items():
            lp, _, _ = reloaded.forward(input_signal=x.unsqueeze(0), input_signal_length=torch.tensor([x.numel()]))
            assert np.array_equal(f32(lp[0, :len(res["arrays"][f"{utt}.log_probs"])]),
                                  res["arrays"][f"{utt}.log_probs"])
    with tarfile.open(nemo_file) as tar:
        members = sorted(tar.getnames())

    vocab = model.tokenizer.vocab_size
    fe = model.preprocessor.featurizer
    manifest = base_manifest(case, "nemo", versions().get("nemo-toolkit"), seed, res, flips, waves) | {
        "model_files": {
            "nemo": f"model/{nemo_file.name} (" + ("plain tar, as save_to writes it" if fast else
                                                  "gzip-compressed tar (older NeMo format; restore_from reads it)")
                    + ")",
            "members": members,
            "note": "model_config.yaml, model_weights.ckpt (a plain state_dict), the tokenizer files under "
                    "<hash>_tokenizer.model / <hash>_vocab.txt named in model_config.yaml as nemo:<name>",
        },
        "config_summary": {
            "model": "EncDecCTCModelBPE", "encoder": "ConformerEncoder", "n_layers": 2, "d_model": 64,
            "n_heads": 4, "ff_expansion_factor": 2, "subsampling": cfg.encoder.subsampling,
            "subsampling_factor": cfg.encoder.subsampling_factor,
            "subsampling_conv_channels": 64,
            "subsampling_note": ("dw_striding: Conv2d(1,C,3,s2,p1), then 2x [depthwise Conv2d(C,C,3,s2,p1,groups=C), "
                                 "pointwise Conv2d(C,C,1)] with ReLU, out Linear(C*10, d); padded frames are "
                                 "masked between stages; each stage L -> floor((L + 2 - 3) / 2) + 1 "
                                 "(167 -> 21 here)" if fast else
                                 "striding: 2x [Conv2d(3, s2, padding 1) + ReLU], out Linear(C*20, d); each stage "
                                 "L -> floor((L + 2 - 3) / 2) + 1 (167 -> 42 here, where unpadded conv2d x4 "
                                 "gives 41)"),
            "xscaling": bool(cfg.encoder.xscaling), "untie_biases": bool(cfg.encoder.untie_biases),
            "untie_biases_note": "true: pos_bias_u/v per layer; false: one (heads, d_head) pair shared by all "
                                 "layers, still saved under every layers.N.self_attn.pos_bias_u/v key (equal values)",
            "xscaling_note": "true: subsampling output x sqrt(d_model) before the positional encoding; false: "
                             "not scaled",
            "conv_kernel_size": cfg.encoder.conv_kernel_size, "conv_norm_type": "batch_norm (eps 1e-5)",
            "layer_norm_eps": 1e-5, "final_norm": False,
            "pos_enc": "rel_pos: Transformer-XL relative positions with rel_shift (RelPositionalEncoding)",
            "ctc_head": "decoder.decoder_layers.0: Conv1d(d, V+1, 1)", "vocab_size_with_blank": vocab + 1,
        },
        "special_ids": {"blank": vocab, "blank_note": "blank is the LAST class (id = vocabulary size); no sos/eos",
                        "unk": model.tokenizer.tokenizer.unk_id()},
        "frontend": {
            "type": "NeMo AudioToMelSpectrogramPreprocessor (FilterbankFeatures)",
            "input": "waveform float32 in [-1, 1)", "sample_rate": 16000, "n_fft": fe.n_fft,
            "win_length": fe.win_length, "hop_length": fe.hop_length,
            "window": "hann (torch.hann_window(win_length, periodic=False)), zero-padded to n_fft centred",
            "center": True, "pad_mode": "constant (zeros)", "preemph": fe.preemph, "nfilt": fe.nfilt,
            "mel": "librosa.filters.mel(sr, n_fft, n_mels=80, fmin=0, fmax=8000) slaney; in the state_dict as "
                   "preprocessor.featurizer.fb (1, 80, 257), the window as preprocessor.featurizer.window (400,)",
            "mag_power": fe.mag_power, "log": True, "log_zero_guard": "add 2**-24",
            "normalize": "per_feature: per utterance and mel bin, mean and std over the valid frames; std "
                         "unbiased (divide by n-1), then + 1e-5; (x - mean) / std",
            "dither_in_config": float(cfg.preprocessor.dither), "dither_inference": 0.0,
            "pad_to_in_config": int(cfg.preprocessor.pad_to), "pad_to_inference": 0,
            "magnitude": "sqrt(re^2 + im^2) then pow(mag_power): not bit-identical to re^2 + im^2",
            "preemphasis": "x[0] kept, x[t] - 0.97 x[t-1], before the STFT, on the unpadded wave",
            "frames": "the preprocessor returns 1 + n_samples // hop_length frames; length = n_samples // "
                      "hop_length; frames beyond length are set to pad_value 0 AFTER normalisation, and the "
                      "per-feature mean / std use the valid frames only. feats keeps the valid frames",
            "frame_counts": res["frames"],
            "exact_settings": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                               for k, v in OmegaConf.to_container(cfg.preprocessor).items()},
        },
        "tokenizer": ("SentencePiece (unigram) inside the .nemo; token id = SentencePiece id, blank appended "
                      "after the last piece; text = SentencePiece decode of the ids"),
        "references": {
            "feats": "(T, 80) preprocessor output (after per_feature normalisation), transposed from NeMo's (80, T)",
            "encoder_out": "(T', 64) encoder output (transposed from NeMo's (D, T'))",
            "log_probs": "(T', V+1) model.forward log-probs, blank last, batch 1, trimmed to the encoder length",
            "greedy_ids": "(N,) int32 ids of NeMo's greedy CTC decoding (ctc_decoder_predictions_tensor)",
        },
    }
    write_case(case_dir, res["arrays"], manifest)


# ----------------------------------------------------------------------------------------------------------------

CASES = {
    "wenet_u2pp_causal": lambda a, w: make_wenet("wenet_u2pp_causal", a.wenet_src, w),
    "wenet_conformer_bn": lambda a, w: make_wenet("wenet_conformer_bn", a.wenet_src, w),
    "espnet_conformer": lambda a, w: make_espnet("espnet_conformer", w),
    "espnet_conformer_legacy": lambda a, w: make_espnet("espnet_conformer_legacy", w),
    "nemo_fastconformer_ctc": lambda a, w: make_nemo("nemo_fastconformer_ctc", w),
    "nemo_conformer_ctc": lambda a, w: make_nemo("nemo_conformer_ctc", w),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wenet-src", type=Path, default=os.environ.get("WENET_SRC"),
                        help="WeNet source tree (the directory holding wenet/) at the pinned commit")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {unknown}; expected some of {list(CASES)}")
    if any(c.startswith("wenet") for c in cases) and (args.wenet_src is None or
                                                      not (args.wenet_src / "wenet").is_dir()):
        parser.error(f"--wenet-src: expected a WeNet source tree containing wenet/, got {args.wenet_src}")
    torch.set_num_threads(1)
    waves = synth_audio(OUT / "audio")
    for case in cases:
        _log(f"== {case}")
        CASES[case](args, waves)


if __name__ == "__main__":
    main()
