"""A synthetic English speech corpus, built locally with espeak-ng and flite from Debian's fortunes texts.

``slimasr data synth --out DIR --hours H`` writes::

    DIR/wavs/<split>/<shard>/<utt_id>.wav   16 kHz mono int16
    DIR/train.jsonl dev.jsonl test.jsonl     manifests (paths relative to DIR)
    DIR/test_espeak.jsonl test_flite.jsonl   the test set per engine
    DIR/lm_text.txt                          every training-split sentence (for a language model)
    DIR/voices.json                          the voice and sentence split, the plan's settings

The split is by voice *and* by sentence, and fixed:

* test voices (never in train or dev): espeak-ng ``en-us+f4``, ``en-us+m7``, ``en-gb-scotland+klatt3`` and
  flite ``slt`` (the only female flite voice, so the flite test also measures an unseen speaker sex);
* dev voices: espeak-ng ``en-gb-x-rp+m2``, ``en-029+f2``, ``en-us-nyc+klatt5``;
* a variant held out for test or dev is excluded from training in *every* language (``f4`` with another accent is
  still nearly the same voice), so the test measures generalisation to unseen speakers;
* everything else is train: espeak-ng languages ``en-us en en-gb-scotland en-gb-x-rp en-gb-x-gbclan
  en-gb-x-gbcwmd en-029 en-us-nyc`` x every installed variant (``espeak-ng --voices=variant``), and flite's
  other voices (``flite -lv``; limited-domain voices such as ``awb_time`` excluded).

Sentences are split too (seeded, 90/5/5): a test sentence is never a training sentence. Utterances are planned
by :func:`synth_plan` (pure and deterministic: voice, sentence, rate and pitch of utterance ``i`` depend only on
the seed and ``i``, so a larger ``--hours`` extends a smaller corpus) and rendered by :func:`synthesize`, which
skips wav files that already exist and are valid (re-running resumes).

``--hours`` is planned from an estimate of each utterance's length (fitted per engine); the manifests hold the exact
durations, usually within 10% of the plan. Speed: 0.2 h (223 utterances) takes about 16 s with ``--jobs 2`` on two
x86 cores, 4 s of which is voice discovery and text preparation; re-running a finished corpus takes about 5 s.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from slimasr.tokenizer import normalize_text

__all__ = [
    "DEV_VOICES", "ESPEAK_LANGUAGES", "SynthError", "SynthItem", "SynthPlan", "SynthReport", "TEST_VOICES", "Voice",
    "discover_voices", "fortune_sentences", "synth_plan", "synthesize",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
ESPEAK = "espeak-ng"
FLITE = "flite"
ESPEAK_LANGUAGES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                    "en-us-nyc")
FORTUNE_DIRS = ("/usr/share/games/fortunes", "/usr/share/fortunes", "/usr/share/fortune")
MIN_WORDS, MAX_WORDS = 4, 20
ESPEAK_RATE = (130, 200)  # words per minute
ESPEAK_PITCH = (30, 70)  # 0-99
FLITE_STRETCH = (0.95, 1.35)  # flite's duration_stretch (1.0 is fast, ~240 words per minute)


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
    """One planned utterance; ``rate`` is words/minute (espeak-ng) or ``duration_stretch`` (flite)."""

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


def discover_voices(probe: bool = True) -> list[Voice]:
    """All usable voices of the installed engines; with ``probe`` each language / flite voice is tried once."""
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
    if not voices:
        raise SynthError("no speech synthesiser found: install espeak-ng and/or flite (`make setup` does)")
    return voices


def _probe(voice: Voice) -> bool:
    with tempfile.TemporaryDirectory() as d:
        try:
            _render(voice, "hello world", 170 if voice.engine == ESPEAK else 1.0, 50, Path(d) / "p.wav")
            return True
        except (SynthError, OSError, subprocess.SubprocessError) as e:
            log.warning("voice %s does not work, skipped: %s", voice.id, e)
            return False


# --------------------------------------------------------------------------------------------------
# Plan (pure)
# --------------------------------------------------------------------------------------------------
def _variant_split(voices: Sequence[Voice]) -> dict[str, list[Voice]]:
    have = set(voices)
    test = [v for v in TEST_VOICES if v in have]
    dev = [v for v in DEV_VOICES if v in have]
    held = {(v.engine, v.variant) for v in (*TEST_VOICES, *DEV_VOICES)}
    train = [v for v in sorted(have) if (v.engine, v.variant) not in held]
    return {"train": train, "dev": dev, "test": test}


def estimate_duration(engine: str, n_words: int, rate: float) -> float:
    """Rough seconds of speech (fitted on the fortunes sentences), used to size the plan."""
    if engine == ESPEAK:
        return 0.73 * n_words * 60.0 / rate + 0.45
    return 0.25 * n_words * rate + 0.55


def synth_plan(
    sentences: Sequence[str], voices: Sequence[Voice], hours: float, seed: int = 0,
    dev_fraction: float = 0.05, test_fraction: float = 0.05, max_eval_hours: float = 1.0,
    flite_fraction: float = 0.25, max_utts_per_voice: int | None = None, noise_snr: float | None = None,
) -> SynthPlan:
    """Deterministic utterance plan: which voice says which sentence, how fast and at what pitch.

    Args:
        sentences: normalised sentences (deduplicated here); split 90/5/5 (seeded) into train/dev/test.
        voices: available voices; split by :data:`TEST_VOICES` / :data:`DEV_VOICES` (see the module docstring).
        hours: total estimated audio. Dev and test get ``dev_fraction`` / ``test_fraction`` of it, each capped
            at ``max_eval_hours``; the rest is train.
        flite_fraction: share of training utterances spoken by flite voices (there are few of them and many
            espeak-ng voices; without this they would hardly appear).
        max_utts_per_voice: cap per training voice; planning stops early when every voice is full.
        noise_snr: add noise at this SNR (dB) to every utterance (kind and seed chosen per utterance).

    Utterance ``i`` of a split depends only on ``(seed, split, i)`` and the inputs, so the plan for more hours
    starts with the plan for fewer.
    """
    if hours <= 0:
        raise ValueError(f"hours must be positive, got {hours}")
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
        groups = _groups(vs, split, flite_fraction)
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
            if voice.engine == ESPEAK:
                rate, pitch = float(r.randint(*ESPEAK_RATE)), r.randint(*ESPEAK_PITCH)
            else:
                rate, pitch = round(r.uniform(*FLITE_STRETCH), 3), None
            kind, nseed = r.choice(("white", "pink")), r.getrandbits(31)
            est = estimate_duration(voice.engine, len(text.split()), rate)
            key = json.dumps([voice.id, text, rate, pitch, noise_snr, kind if noise_snr is not None else None, nseed])
            h = hashlib.sha1(key.encode()).hexdigest()[:8]
            items.append(SynthItem(f"{split}-{i:06d}-{h}", split, voice, text, rate, pitch, noise_snr, kind, nseed,
                                   est))
            used += est
            i += 1
    return SynthPlan(tuple(items), sent, vsplit)


def _groups(voices: Sequence[Voice], split: str, flite_fraction: float) -> list[tuple[float, list[list[Voice]]]]:
    """Weighted engine groups; espeak-ng voices are grouped by language (each accent equally likely)."""
    esp = [v for v in voices if v.engine == ESPEAK]
    fl = [v for v in voices if v.engine == FLITE]
    by_lang: dict[str, list[Voice]] = {}
    for v in esp:
        by_lang.setdefault(v.language, []).append(v)
    esp_groups = [by_lang[k] for k in sorted(by_lang)]
    if split == "test":  # equal halves, so test_espeak and test_flite are both sizeable
        w_fl = 0.5 if fl and esp else (1.0 if fl else 0.0)
    else:
        w_fl = flite_fraction if fl and esp else (1.0 if fl else 0.0)
    out = []
    if esp:
        out.append((1.0 - w_fl, esp_groups))
    if fl:
        out.append((w_fl, [fl]))
    return out


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
def _render(voice: Voice, text: str, rate: float, pitch: int | None, out_wav: Path) -> np.ndarray:
    """Synthesise ``text`` into a temporary wav next to ``out_wav``; return float32 mono at 16 kHz."""
    import soundfile as sf

    from slimasr.audio import resample, to_float_mono

    tmp = out_wav.with_name(out_wav.name + ".raw.wav")
    if voice.engine == ESPEAK:
        cmd = [ESPEAK, "-v", f"{voice.language}+{voice.variant}", "-s", str(int(rate)), "-p", str(int(pitch or 50)),
               "-w", str(tmp), text]
    elif voice.engine == FLITE:
        cmd = [FLITE, "-voice", voice.variant, "--setf", f"duration_stretch={rate}", "-t", text, "-o", str(tmp)]
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


def _noise(n: int, kind: str, seed: int) -> np.ndarray:
    """Unit-power white or pink (1/f power) noise, deterministic for the seed."""
    g = np.random.default_rng(seed)
    w = g.standard_normal(n)
    if kind == "pink" and n > 1:
        spec = np.fft.rfft(w)
        f = np.arange(spec.shape[0], dtype=np.float64)
        f[0] = 1.0
        w = np.fft.irfft(spec / np.sqrt(f), n)
    return (w / (np.sqrt(np.mean(w * w)) + 1e-12)).astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, kind: str = "white", seed: int = 0) -> np.ndarray:
    """``x`` plus noise at ``snr_db`` (relative to the utterance's mean power), clipped to [-1, 1]."""
    p = float(np.mean(x.astype(np.float64) ** 2))
    if p == 0.0:
        return x
    y = x + _noise(x.shape[0], kind, seed) * np.float32(np.sqrt(p / 10 ** (snr_db / 10)))
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


def _synth_one(args: tuple[SynthItem, str]) -> tuple[str, float | None, str | None, bool]:
    """Render one item unless a valid wav exists: ``(utt_id, duration, error, generated)``."""
    import soundfile as sf

    item, out_dir = args
    path = Path(out_dir) / item.wav_relpath
    d = _valid_wav(path)
    if d is not None:
        return item.utt_id, d, None, False
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        x = _render(item.voice, item.text, item.rate, item.pitch, path)
        if item.noise_snr is not None:
            x = add_noise(x, item.noise_snr, item.noise_kind, item.noise_seed)
        tmp = path.with_name(path.name + ".part")
        sf.write(str(tmp), np.clip(x, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except (SynthError, ValueError, OSError, subprocess.SubprocessError) as e:
        return item.utt_id, None, str(e), False
    return item.utt_id, x.shape[0] / SAMPLE_RATE, None, True


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

    def summary(self) -> str:
        per = ", ".join(f"{s} {self.utterances[s]} utts / {self.hours[s]:.3f} h" for s in self.utterances)
        return (f"{per}; {self.generated} generated, {self.reused} already present, {self.failed} failed; "
                f"{self.seconds:.1f} s -> {self.out_dir}")


def synthesize(
    out_dir: str | os.PathLike, hours: float, seed: int = 0, jobs: int | None = None,
    noise_snr: float | None = None, max_utts_per_voice: int | None = None, progress: bool = True,
    voices: Sequence[Voice] | None = None, sentences: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
) -> SynthReport:
    """Plan and render the corpus into ``out_dir`` (resumable; see the module docstring).

    Args:
        splits: render only these splits of the plan (e.g. ``("test",)`` for a quick held-out test set; the
            other manifests are written empty). Default: all.
        jobs: parallel processes (default ``os.cpu_count()``).
        voices / sentences: override discovery (tests); default: all installed voices, the fortunes sentences.

    Raises:
        SynthError: no engine or no fortunes corpus installed, or every utterance failed.
    """
    from tqdm import tqdm

    from slimasr.data.manifest import write_manifest

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sentences = fortune_sentences() if sentences is None else list(sentences)
    voices = discover_voices() if voices is None else list(voices)
    plan = synth_plan(sentences, voices, hours, seed=seed, noise_snr=noise_snr,
                      max_utts_per_voice=max_utts_per_voice)
    (out / "lm_text.txt").write_text("".join(s + "\n" for s in plan.sentences["train"]), encoding="utf-8")
    (out / "voices.json").write_text(json.dumps({
        "seed": seed, "hours": hours, "noise_snr": noise_snr, "max_utts_per_voice": max_utts_per_voice,
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
    work = [(item, str(out)) for item in plan.items]
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

    rows: dict[str, list[dict]] = {"train": [], "dev": [], "test": [], "test_espeak": [], "test_flite": []}
    failed_by_voice: dict[str, int] = {}
    total_by_voice: dict[str, int] = {}
    for item in plan.items:
        d, err, _ = results[item.utt_id]
        total_by_voice[item.voice.id] = total_by_voice.get(item.voice.id, 0) + 1
        if d is None:
            log.warning("synth: %s (%s) failed: %s", item.utt_id, item.voice.id, err)
            failed_by_voice[item.voice.id] = failed_by_voice.get(item.voice.id, 0) + 1
            continue
        row = {"audio_filepath": item.wav_relpath, "duration": round(d, 4), "text": item.text,
               "speaker": item.voice.id}
        rows[item.split].append(row)
        if item.split == "test":
            rows["test_espeak" if item.voice.engine == ESPEAK else "test_flite"].append(row)
    n_failed = sum(failed_by_voice.values())
    if plan.items and n_failed == len(plan.items):
        raise SynthError(f"every utterance failed; first error: {next(iter(results.values()))[1]}")
    for name, rs in rows.items():
        write_manifest(out / f"{name}.jsonl", rs, base=out)  # item paths are relative to out
    gen = sum(1 for _, _, g in results.values() if g)
    report = SynthReport(
        out_dir=str(out),
        utterances={s: len(rows[s]) for s in ("train", "dev", "test")},
        hours={s: sum(r["duration"] for r in rows[s]) / 3600 for s in ("train", "dev", "test")},
        generated=gen, reused=len(results) - gen - n_failed, failed=n_failed,
        failed_voices=sorted(v for v, n in failed_by_voice.items() if n == total_by_voice[v]),
        seconds=time.perf_counter() - t0,
    )
    log.info("synth: %s", report.summary())
    return report
