"""Manifests and the Kaldi importer."""
import json

import numpy as np
import pytest
import soundfile as sf

from slimasr.data.manifest import ManifestError, import_kaldi, read_manifest, write_manifest


def test_round_trip_and_relative_paths(tmp_path):
    (tmp_path / "wavs").mkdir()
    rows = [{"audio_filepath": "wavs/a.wav", "duration": 1.5, "text": "hello world", "speaker": "s1"},
            {"audio_filepath": str(tmp_path / "wavs" / "b.wav"), "duration": 2, "text": "bye"}]
    m = write_manifest(tmp_path / "m.jsonl", rows, relative=True)
    raw = [json.loads(line) for line in m.read_text().splitlines()]
    assert [r["audio_filepath"] for r in raw] == ["wavs/a.wav", "wavs/b.wav"]
    back = read_manifest(m)
    assert back[0]["audio_filepath"] == str(tmp_path.resolve() / "wavs" / "a.wav")
    assert back[0]["speaker"] == "s1" and back[1]["duration"] == 2.0 and "speaker" not in back[1]
    assert read_manifest(m, resolve=False)[0]["audio_filepath"] == "wavs/a.wav"


@pytest.mark.parametrize("line,msg", [
    ('{"audio_filepath": "a.wav", "duration": 1.0', "not valid JSON"),
    ('{"audio_filepath": "a.wav", "text": "x"}', "missing key.*duration"),
    ('{"audio_filepath": "a.wav", "duration": "long", "text": "x"}', "duration"),
    ('[1, 2]', "JSON object"),
])
def test_malformed_line_named(tmp_path, line, msg):
    m = tmp_path / "bad.jsonl"
    m.write_text('{"audio_filepath": "a.wav", "duration": 1.0, "text": "ok"}\n\n' + line + "\n")
    with pytest.raises(ManifestError, match=rf"bad.jsonl:3: .*{msg}"):
        read_manifest(m)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="nope.jsonl"):
        read_manifest(tmp_path / "nope.jsonl")


def _kaldi_dir(tmp_path, piped=False):
    d = tmp_path / "kaldi"
    (d / "audio").mkdir(parents=True)
    scp, text, spk = [], [], []
    for k, (sr, n) in enumerate([(16000, 8000), (8000, 16000), (16000, 24000)]):
        p = d / "audio" / f"u{k}.wav"
        sf.write(p, np.zeros(n, np.float32) + 0.01, sr)
        scp.append(f"utt{k} {p if k != 1 else 'audio/u1.wav'}")
        text.append(f"utt{k} WORD number {k}")
        spk.append(f"utt{k} spk{k % 2}")
    if piped:
        scp.append("utt9 sox in.flac -t wav - |")
    (d / "wav.scp").write_text("\n".join(scp) + "\n")
    (d / "text").write_text("\n".join(text) + "\n")
    (d / "utt2spk").write_text("\n".join(spk) + "\n")
    return d


def test_import_kaldi(tmp_path):
    rows = import_kaldi(_kaldi_dir(tmp_path))
    assert [r["duration"] for r in rows] == [0.5, 2.0, 1.5]
    assert [r["speaker"] for r in rows] == ["spk0", "spk1", "spk0"]
    assert rows[0]["text"] == "WORD number 0"
    assert all(r["audio_filepath"].endswith(f"u{k}.wav") for k, r in enumerate(rows))
    m = write_manifest(tmp_path / "k.jsonl", rows)
    assert len(read_manifest(m)) == 3


def test_import_kaldi_rejects_pipes(tmp_path):
    with pytest.raises(ManifestError, match="utt9.*piped command"):
        import_kaldi(_kaldi_dir(tmp_path, piped=True))


def test_import_kaldi_missing_files(tmp_path):
    with pytest.raises(ManifestError, match="wav.scp"):
        import_kaldi(tmp_path)
    d = _kaldi_dir(tmp_path)
    (d / "audio" / "u2.wav").unlink()
    for k in (0, 1):
        (d / "audio" / f"u{k}.wav").write_bytes(b"not audio")
    with pytest.raises(ManifestError, match="no utterance.*3 unreadable: utt0"):     # nothing usable at all
        import_kaldi(d)


def test_import_kaldi_skips_and_names_an_unreadable_file(tmp_path, caplog):
    """One missing and one broken file among three utterances: the third is imported, the two are named."""
    d = _kaldi_dir(tmp_path)
    (d / "audio" / "u2.wav").unlink()
    (d / "audio" / "u1.wav").write_bytes(b"RIFF....WAVEbroken")
    with caplog.at_level("WARNING", logger="slimasr.data.manifest"):
        rows = import_kaldi(d)
    assert [r["utt_id"] for r in rows] == ["utt0"]
    assert "2 audio files cannot be read" in caplog.text and "utt1" in caplog.text and "utt2" in caplog.text
