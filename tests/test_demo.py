"""``slimasr demo``'s step headers: numbered as the steps run (the steps themselves are timed by the demo and
covered by the tests of synthesis, decoding, pruning and export)."""
import re
from types import SimpleNamespace

import pytest

import slimasr.data.synth
import slimasr.decoding
import slimasr.model
from slimasr.demo import run_demo


@pytest.fixture
def quick(monkeypatch):
    """No synthesis and no decoding: an empty test set and a decode that finds nothing to score."""
    def synthesize(out, **kw):
        out.mkdir(parents=True, exist_ok=True)
        (out / "test.jsonl").write_text("")
        return SimpleNamespace(summary=lambda: "0 utterances")

    monkeypatch.setattr(slimasr.data.synth, "synthesize", synthesize)
    monkeypatch.setattr(slimasr.decoding, "decode_manifest", lambda *a, **k: {
        "skipped_items": [], "hyps": [], "wer": 0.0, "cer": 0.0, "rtf": 0.0})
    monkeypatch.setattr(slimasr.model, "load_model", lambda path: SimpleNamespace(encoder=SimpleNamespace(layers=[])))


def test_steps_without_pruning_are_numbered_as_they_run(quick, tmp_path):
    lines = []
    run_demo(tmp_path / "w", prune=False, export=False, echo=lines.append)
    assert [m.group(0) for m in map(re.compile(r"^\[\d+/\d+\]").match, lines) if m] == ["[1/2]", "[2/2]"], lines
