"""``slimasr transcribe --out``: a path ending in / is a folder even for one input (the README's
``slimasr transcribe recordings/ --format srt --out subtitles/`` on a folder holding one recording)."""
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimasr.cli import main

FIX = Path(__file__).parent / "fixtures" / "import"


def test_an_out_ending_in_a_slash_is_a_folder_for_one_input(tmp_path):
    from slimasr.importers import import_wenet

    if not (FIX / "wenet_conformer_bn" / "model").is_dir():
        pytest.skip("fixture wenet_conformer_bn is absent (tests/fixtures/import; tools/import_fixtures)")
    model = import_wenet(FIX / "wenet_conformer_bn" / "model").save(tmp_path / "m.pt")
    (tmp_path / "recordings").mkdir()
    shutil.copy(FIX / "audio" / "utt0.wav", tmp_path / "recordings" / "utt0.wav")
    out = tmp_path / "subtitles"
    r = CliRunner().invoke(main, ["transcribe", "--no-progress", "--model", str(model), str(tmp_path / "recordings"),
                                  "--format", "srt", "--out", f"{out}/"])
    assert r.exit_code == 0, r.output
    assert out.is_dir() and (out / "utt0.srt").read_text().startswith("1\n00:00:00,"), r.output
    r = CliRunner().invoke(main, ["transcribe", "--no-progress", "--model", str(model),
                                  str(FIX / "audio" / "utt1.wav"), "--out", str(tmp_path / "one.txt")])
    assert r.exit_code == 0 and (tmp_path / "one.txt").is_file(), r.output     # a plain name is still a file
