"""Manifests and the Kaldi importer."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from slimasr.data.kaldi import import_kaldi
from slimasr.data.manifest import ManifestError, load_utterance, read_manifest, read_manifest_skipping, utterance_key, \
    write_manifest


def test_round_trip_and_relative_paths(tmp_path, monkeypatch):
    (tmp_path / "wavs").mkdir()
    monkeypatch.chdir(tmp_path)
    rows = [{"audio_filepath": "wavs/a.wav", "duration": 1.5, "text": "hello world", "speaker": "s1"},
            {"audio_filepath": str(tmp_path / "wavs" / "b.wav"), "duration": 2, "text": "bye"},
            {"audio_filepath": "/elsewhere/c.wav", "duration": 1, "text": "far", "offset": 2.5}]
    m = write_manifest(tmp_path / "m.jsonl", rows)
    raw = [json.loads(line) for line in m.read_text().splitlines()]
    # inside the manifest's folder: relative to it; anywhere else: absolute
    assert [r["audio_filepath"] for r in raw] == ["wavs/a.wav", "wavs/b.wav", "/elsewhere/c.wav"]
    back = read_manifest(m)
    assert back[0]["audio_filepath"] == str(tmp_path.resolve() / "wavs" / "a.wav")
    assert back[0]["speaker"] == "s1" and back[1]["duration"] == 2.0 and "speaker" not in back[1]
    assert back[2]["offset"] == 2.5
    assert read_manifest(m, resolve=False)[0]["audio_filepath"] == "wavs/a.wav"


def test_paths_written_from_another_directory(tmp_path, monkeypatch):
    """Paths relative to the working directory are stored relative to the manifest's folder, so a manifest in a
    subfolder of the working directory reads back the same files (the reader resolves against its folder)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "kaldi").mkdir(parents=True)
    sf.write(tmp_path / "data" / "kaldi" / "u1.wav", np.zeros(1600, np.float32), 16000)
    m = write_manifest("data/train.jsonl", [{"audio_filepath": "data/kaldi/u1.wav", "duration": 0.1, "text": "a"}])
    assert json.loads(m.read_text())["audio_filepath"] == "kaldi/u1.wav"
    assert Path(read_manifest(m)[0]["audio_filepath"]).is_file()
    # base: rows relative to another folder
    m2 = write_manifest(tmp_path / "data" / "m2.jsonl", [{"audio_filepath": "u1.wav", "duration": 0.1, "text": "a"}],
                        base=tmp_path / "data" / "kaldi")
    assert json.loads(m2.read_text())["audio_filepath"] == "kaldi/u1.wav"


def test_manifest_moved_with_its_audio(tmp_path):
    src = tmp_path / "corpus"
    (src / "wavs").mkdir(parents=True)
    sf.write(src / "wavs" / "a.wav", np.zeros(1600, np.float32), 16000)
    write_manifest(src / "m.jsonl", [{"audio_filepath": str(src / "wavs" / "a.wav"), "duration": 0.1, "text": "a"}])
    moved = tmp_path / "moved"
    shutil.move(src, moved)
    row = read_manifest(moved / "m.jsonl")[0]
    assert row["audio_filepath"] == str(moved.resolve() / "wavs" / "a.wav") and Path(row["audio_filepath"]).is_file()


def test_load_utterance_reads_only_the_segment(tmp_path):
    x = np.arange(32000, dtype=np.float32) / 64000.0          # a ramp: each sample says where it is
    sf.write(tmp_path / "r.wav", x, 16000, subtype="FLOAT")
    whole = {"audio_filepath": str(tmp_path / "r.wav"), "duration": 2.0, "text": "x"}
    seg = dict(whole, offset=0.5, duration=0.25)
    np.testing.assert_array_equal(load_utterance(whole), x)
    np.testing.assert_array_equal(load_utterance(seg), x[8000:12000])
    assert utterance_key(whole) != utterance_key(seg) and utterance_key(whole) == whole["audio_filepath"]
    with pytest.raises(ValueError, match=r"r.wav \[3.000 s.*after the end"):
        load_utterance(dict(seg, offset=3.0))


def test_negative_offset_refused(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"audio_filepath": "a.wav", "duration": 1.0, "text": "x", "offset": -1}\n')
    with pytest.raises(ManifestError, match="m.jsonl:1: offset must be a non-negative"):
        read_manifest(m)


@pytest.mark.parametrize("line,msg", [
    ('{"audio_filepath": "a.wav", "duration": 1.0', "not valid JSON"),
    ('{"audio_filepath": "a.wav", "text": "x"}', "missing key.*duration"),
    ('{"audio_filepath": "a.wav", "duration": "long", "text": "x"}', "duration"),
    ('[1, 2]', "JSON object"),
    ('{"key": "u1", "wav": "a.wav", "txt": "x"}', r"a WeNet data.list row \(key, wav, txt\): convert .*"
                                                  "`slimasr data import-kaldi`"),
])
def test_malformed_line_named(tmp_path, line, msg):
    m = tmp_path / "bad.jsonl"
    m.write_text('{"audio_filepath": "a.wav", "duration": 1.0, "text": "ok"}\n\n' + line + "\n")
    with pytest.raises(ManifestError, match=rf"bad.jsonl:3: .*{msg}"):
        read_manifest(m)


@pytest.mark.parametrize("line,msg", [
    ('{"audio_filepath": "a.wav", "duration": 1.0', "not valid JSON"),
    ('{"audio_filepath": "a.wav", "text": "x"}', "missing key.*duration"),
    ('[1, 2]', "JSON object"),
])
def test_batch_readers_skip_and_name_a_malformed_line(tmp_path, line, msg):
    """With ``skipped``, a bad line is collected (file and line named) and the rows around it are still read."""
    m = tmp_path / "bad.jsonl"
    good = '{"audio_filepath": "%s.wav", "duration": 1.0, "text": "ok"}\n'
    m.write_text(good % "a" + line + "\n" + good % "b")
    skipped: list = []
    rows = read_manifest(m, skipped=skipped)
    assert [Path(r["audio_filepath"]).name for r in rows] == ["a.wav", "b.wav"]
    assert len(skipped) == 1 and skipped[0].where == f"{m}:2", skipped
    assert re.search(rf"bad.jsonl:2: .*{msg}", str(skipped[0])), skipped[0]


def test_commands_reading_a_manifest_skip_and_name_a_malformed_line(tmp_path, caplog):
    """bench-server --data, reproduce and prune iterative --dev read manifests with read_manifest_skipping: a
    malformed line is logged (file:line) and the other rows are used."""
    from slimasr.recipes.reproduce.runs import _manifest_hours
    from slimasr.serve.loadtest import load_audio_rows

    for name, dur in (("a", 0.5), ("b", 0.25)):
        sf.write(tmp_path / f"{name}.wav", np.zeros(int(16000 * dur), np.float32), 16000)
    m = tmp_path / "dev.jsonl"
    m.write_text('{"audio_filepath": "a.wav", "duration": 0.5, "text": "ok"}\n{"audio_filepath": "a.wav"\n'
                 '{"audio_filepath": "b.wav", "duration": 0.25, "text": "ok"}\n')
    with caplog.at_level("WARNING"):
        rows = read_manifest_skipping(m)
    assert [Path(r["audio_filepath"]).name for r in rows] == ["a.wav", "b.wav"]
    assert f"skipped {m}:2: not valid JSON" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert [w.size for w in load_audio_rows(str(m))] == [8000, 4000]
    assert f"{m}:2" in caplog.text
    # an empty and a missing audio file are skipped and named; the load test goes on with the rest
    (tmp_path / "empty.wav").write_bytes(b"")
    m2 = tmp_path / "some_bad.jsonl"
    m2.write_text('{"audio_filepath": "empty.wav", "duration": 0.5, "text": "x"}\n'
                  '{"audio_filepath": "gone.wav", "duration": 0.5, "text": "x"}\n'
                  '{"audio_filepath": "b.wav", "duration": 0.25, "text": "ok"}\n')
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert [w.size for w in load_audio_rows(str(m2))] == [4000]
    assert "skipped" in caplog.text and "empty.wav" in caplog.text and "gone.wav" in caplog.text
    m3 = tmp_path / "all_bad.jsonl"
    m3.write_text('{"audio_filepath": "gone.wav", "duration": 0.5, "text": "x"}\n')
    with pytest.raises(ValueError, match="none of its 1 audio files could be read"):
        load_audio_rows(str(m3))
    assert _manifest_hours(m) == pytest.approx(0.75 / 3600)
    with pytest.raises(ManifestError, match="nope.jsonl"):
        read_manifest_skipping(tmp_path / "nope.jsonl")


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
        text.append("utt9 piped words")
    (d / "wav.scp").write_text("\n".join(scp) + "\n")
    (d / "text").write_text("\n".join(text) + "\n")
    (d / "utt2spk").write_text("\n".join(spk) + "\n")
    return d


def test_import_kaldi(tmp_path):
    found = import_kaldi(_kaldi_dir(tmp_path))
    rows = found.rows
    assert [r["duration"] for r in rows] == [0.5, 2.0, 1.5] and not found.skipped
    assert [r["speaker"] for r in rows] == ["spk0", "spk1", "spk0"]
    assert rows[0]["text"] == "WORD number 0" and "offset" not in rows[0]
    assert all(r["audio_filepath"].endswith(f"u{k}.wav") for k, r in enumerate(rows))
    m = write_manifest(tmp_path / "k.jsonl", rows)
    assert len(read_manifest(m)) == 3


def test_import_kaldi_refuses_pipes_by_name(tmp_path):
    found = import_kaldi(_kaldi_dir(tmp_path, piped=True))
    assert len(found.rows) == 3 and found.skipped == {"piped": ["utt9"]}
    assert "piped" in found.skip_lines()[0] and "utt9" in found.skip_lines()[0]
    d = tmp_path / "p"
    d.mkdir()
    (d / "wav.scp").write_text("a flac -c -d -s a.flac |\nb data/raw.ark:1234\n")
    (d / "text").write_text("a hello\nb there\n")
    with pytest.raises(ManifestError, match="no usable utterance.*2 wav.scp entries that are piped.*a, b"):
        import_kaldi(d)


def test_import_kaldi_missing_files(tmp_path):
    with pytest.raises(ManifestError, match="wav.scp"):
        import_kaldi(tmp_path)
    d = _kaldi_dir(tmp_path)
    (d / "audio" / "u2.wav").unlink()
    found = import_kaldi(d)                    # one unreadable recording does not sink the import
    assert [r["utt_id"] for r in found.rows] == ["utt0", "utt1"] and found.skipped == {"unreadable": ["utt2"]}


def _segmented_dir(tmp_path, utt_ids=("rec1", "rec1-b")):
    """One 9.8 s recording cut into two utterances by ``segments``."""
    d = tmp_path / "seg"
    d.mkdir()
    x = (np.arange(int(9.8 * 16000)) % 100 / 1000.0).astype(np.float32)
    sf.write(d / "rec1.wav", x, 16000)
    (d / "wav.scp").write_text("rec1 rec1.wav\n")
    a, b = utt_ids
    (d / "segments").write_text(f"{a} rec1 0.00 4.90\n{b} rec1 4.90 -1\n")
    (d / "text").write_text(f"{a} first half\n{b} second half\n")
    return d


@pytest.mark.parametrize("utt_ids", [("rec1", "rec1-b"), ("u-a", "u-b")])
def test_import_kaldi_segments(tmp_path, utt_ids):
    d = _segmented_dir(tmp_path, utt_ids)
    found = import_kaldi(d)
    assert found.segmented and not found.skipped
    assert [(r["utt_id"], r["text"], r["offset"], r["duration"]) for r in found.rows] == [
        (utt_ids[0], "first half", 0.0, 4.9), (utt_ids[1], "second half", 4.9, 4.9)]
    assert all(r["audio_filepath"] == str(d / "rec1.wav") for r in found.rows)
    m = write_manifest(d / "m.jsonl", found.rows)
    back = read_manifest(m)
    assert len(load_utterance(back[1])) == int(round(4.9 * 16000))


def test_import_kaldi_counts_every_unusable_line(tmp_path):
    d = _segmented_dir(tmp_path)
    with open(d / "segments", "a") as f:
        f.write("orphan rec9 0 1\nlate rec1 9.0 12.0\nnotext rec1 1 2\n")
    with open(d / "text", "a") as f:
        f.write("orphan text of an unknown recording\nlate too late\nghost no audio at all\n")
    with open(d / "wav.scp", "a") as f:
        f.write("rec2 rec1.wav\n")
    found = import_kaldi(d)
    assert [r["utt_id"] for r in found.rows] == ["rec1", "rec1-b"]
    assert found.skipped == {"no_audio": ["ghost"], "no_text": ["notext"], "unknown_recording": ["orphan"],
                             "bad_segment": ["late"], "unsegmented": ["rec2"]}
    assert found.num_skipped == 5


def test_import_kaldi_error_names_segments(tmp_path):
    d = _segmented_dir(tmp_path)
    (d / "segments").write_text("u1 recX 0 1\nu2 recX 1 2\n")
    (d / "text").write_text("u1 a\nu2 b\n")
    with pytest.raises(ManifestError) as e:
        import_kaldi(d)
    msg = str(e.value)
    assert "segments" in msg and "2 segments naming a recording that is not in wav.scp: u1, u2" in msg
    assert "in both wav.scp and text" not in msg
    (d / "segments").write_text("u1 rec1 zero 1\n")
    with pytest.raises(ManifestError, match="segments: segment 'u1'.*start"):
        import_kaldi(d)
