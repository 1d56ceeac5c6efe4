"""Imported WeNet / ESPnet / NeMo models equal the toolkits' own forward (committed fixtures, see
tests/fixtures/import/README.md): CTC log-probs on the toolkit's features, features from audio, greedy text,
WeNet U2++ chunk-by-chunk streaming, sherpa-onnx on the exported streaming model, prune + fine-tune + export, and
one-line errors for bad input."""
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from slimasr.cli import main
from slimasr.features import compute_features
from slimasr.importers import ImportFailed, import_espnet, import_nemo, import_wenet
from slimasr.model import load_model
from slimasr.tokenizer import Tokenizer

FIX = Path(__file__).parent / "fixtures" / "import"
TOL = 1e-4
UTTS = ("utt0", "utt1")
ESPNET_EXP = "model/exp/asr_train_conformer_tiny_raw_en_bpe60"


def _case(name):
    d = FIX / name
    if not (d / "manifest.json").is_file():
        pytest.skip(f"fixture {name} is absent (tests/fixtures/import/{name}; built by "
                    "tools/import_fixtures/make_fixtures.py)")
    return d, json.loads((d / "manifest.json").read_text()), np.load(d / "reference.npz")


def _import(name):
    d = FIX / name
    if name.startswith("wenet"):
        return import_wenet(d / "model")
    if name.startswith("espnet"):
        return import_espnet(d / ESPNET_EXP / "config.yaml", d / ESPNET_EXP / "model.pth")
    return import_nemo(next((d / "model").glob("*.nemo")))


_MODELS = {}


def _model(name):
    _case(name)
    if name not in _MODELS:
        _MODELS[name] = _import(name)
    return _MODELS[name]


def _source_order(model, lp):
    """Our log-probs (T', V) in the source's token order (NeMo: blank back to the last column)."""
    if model.source["toolkit"] == "nemo":
        return np.concatenate((lp[:, 1:], lp[:, :1]), axis=1)
    return lp


def _greedy(lp):
    out, prev = [], -1
    for y in lp.argmax(-1).tolist():
        if y != prev and y != 0:
            out.append(y)
        prev = y
    return out


def _model_input(m, ref, utt):
    """The toolkit's features as the imported model reads them: after a per-utterance normalisation (which our
    front-end computes), before a global CMVN (which our encoder applies)."""
    key = f"{utt}.feats_normalized"
    return ref[key] if m.frontend.cmvn != "global" and key in ref.files else ref[f"{utt}.feats"]


def _wave(utt):
    w, sr = sf.read(FIX / "audio" / f"{utt}.wav", dtype="float32")
    assert sr == 16000
    return w


CASES = ["wenet_u2pp_causal", "wenet_conformer_bn", "espnet_conformer", "espnet_conformer_legacy",
         "nemo_fastconformer_ctc", "nemo_conformer_ctc"]


@pytest.mark.parametrize("name", CASES)
def test_offline_log_probs_equal_toolkit(name):
    """Final and inter-CTC log-probs on the toolkit's own features, batch 1, max |delta| <= 1e-4."""
    d, man, ref = _case(name)
    m = _model(name)
    for utt in UTTS:
        x = torch.from_numpy(_model_input(m, ref, utt))[None]
        with torch.no_grad():
            enc, lens, inter = m.encoder.forward_layers_with_intermediate(
                x, torch.tensor([x.size(1)]), None, None, m.config.intermediate_ctc_layers)
            ours = torch.log_softmax(m.ctc(enc), -1)[0].numpy()
            lp = _source_order(m, ours)
            want = ref[f"{utt}.log_probs"]
            assert lp.shape == want.shape, (lp.shape, want.shape)
            assert np.abs(lp - want).max() <= TOL
            for pos, h in zip(m.config.intermediate_ctc_layers, inter):
                ilp = _source_order(m, torch.log_softmax(m.ctc(h), -1)[0].numpy())
                assert np.abs(ilp - ref[f"{utt}.interctc_{pos}_log_probs"]).max() <= TOL
        shift = 1 if m.source["toolkit"] == "nemo" else 0           # NeMo: source id = our id - 1
        assert [i - shift for i in _greedy(ours)] == [int(i) for i in ref[f"{utt}.greedy_ids"]]
    if name == "espnet_conformer":
        assert m.config.intermediate_ctc_layers == (1, 2) and m.config.pos_enc == "rel"
    if name == "espnet_conformer_legacy":                # ESPnet's defaults: legacy positions, utterance_mvn
        assert m.config.pos_enc == "legacy" and m.frontend.cmvn == "utterance_mean" and not m.config.streamable


@pytest.mark.parametrize("name", CASES)
def test_features_and_text_from_audio(name):
    """Our front-end (numpy, torch-free) reproduces the toolkit's features to the fbank tests' tolerance
    (mean |delta| and the 99.9% quantile; the worst values are float32 FFT rounding in near-silent low bins), and
    the greedy text of our features equals the toolkit's."""
    d, man, ref = _case(name)
    m = _model(name)
    tok = Tokenizer.from_bytes(m.tokenizer_bytes)
    for utt in UTTS:
        feats = compute_features(_wave(utt), m.frontend)
        want = _model_input(m, ref, utt)
        assert feats.shape == want.shape
        diff = np.abs(feats - want)
        assert diff.mean() < 5e-5 and np.quantile(diff, 0.999) < 1e-3 and diff.max() < 0.1, (diff.mean(), diff.max())
        with torch.no_grad():
            lp, _ = m.ctc_log_probs(torch.from_numpy(feats)[None])
        assert tok.decode(_greedy(lp[0].numpy())) == man["greedy_texts"][utt]


def test_wenet_streaming_equals_wenet_chunk_by_chunk():
    """stream_step chunk by chunk == WeNet's forward_chunk_by_chunk (chunk 16 / 4 left, chunk 8 / all left), and
    chunk-masked offline == WeNet's chunk-masked offline, max |delta| <= 1e-4."""
    d, man, ref = _case("wenet_u2pp_causal")
    m = _model("wenet_u2pp_causal")
    assert m.config.causal_conv and m.config.kernel_size % 2 == 0 and m.config.pos_enc == "abs_key"
    tok = Tokenizer.from_bytes(m.tokenizer_bytes)
    for utt in UTTS:
        x = torch.from_numpy(ref[f"{utt}.feats"])[None]
        for key, chunk, left in (("c16_l4", 16, 4), ("c8_lall", 8, None)):
            with torch.no_grad():
                st = m.stream_log_probs(x, chunk, left)[0].numpy()
                masked = m.ctc_log_probs(x, chunk_size=chunk, left_chunks=left)[0][0].numpy()
            want = ref[f"{utt}.stream_{key}_log_probs"]
            # WeNet's loop stops when fewer than 7 frames remain; ours also decodes that remainder
            assert want.shape[0] <= st.shape[0] == masked.shape[0]
            assert np.abs(st[: len(want)] - want).max() <= TOL
            assert np.abs(masked - ref[f"{utt}.masked_{key}_log_probs"]).max() <= TOL
            assert tok.decode(_greedy(st[: len(want)])) == man["greedy_texts"][f"{utt}.stream_{key}"]


@pytest.mark.slow
def test_wenet_streaming_onnx_in_sherpa_onnx(tmp_path):
    """The exported streaming ONNX of the imported U2++ model: sherpa-onnx (with WeNet's fbank settings) gives
    the same greedy tokens as our onnxruntime chunk loop and as the PyTorch streaming path on its features."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    import onnxruntime as ort

    from slimasr.export import export_onnx

    _case("wenet_u2pp_causal")
    m = _model("wenet_u2pp_causal")
    chunk, left = 8, 2
    files = export_onnx(m, tmp_path / "onnx", streaming=True, chunk_size=chunk, left_chunks=left)
    tokens = {}
    for line in Path(files["tokens"]).read_text(encoding="utf-8").splitlines():
        sym, i = line.rsplit(" ", 1)
        tokens[int(i)] = sym
    assert [tokens[i] for i in range(len(tokens))] == list(Tokenizer.from_bytes(m.tokenizer_bytes).table.tokens)
    # from_wenet_ctc with WeNet's fbank settings (its feature config takes only rate and dimension)
    import sherpa_onnx.online_recognizer as sor

    rec = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(tokens=str(files["tokens"]), model=str(files["model"]),
                                                      chunk_size=chunk, num_left_chunks=left, num_threads=1)
    fb, feat = m.frontend.fbank, rec.config.feat_config
    feat.snip_edges, feat.high_freq, feat.low_freq, feat.dither = fb.snip_edges, fb.high_freq, fb.low_freq, 0.0
    rec.recognizer = sor._Recognizer(rec.config)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(files["model"]), so, providers=["CPUExecutionProvider"])
    sym_to_id = {s.replace("\u2581", " "): i for i, s in tokens.items()}
    for utt in UTTS:
        wave = np.concatenate([_wave(utt), np.zeros(int(0.66 * 16000), np.float32)])
        s = rec.create_stream()
        s.accept_waveform(16000, wave)
        s.input_finished()
        while rec.is_ready(s):
            rec.decode_stream(s)
        theirs = [sym_to_id[t] for t in rec.get_result_all(s).tokens]
        feats = compute_features(wave, m.frontend)
        ours = _greedy(_sherpa_loop(sess, m, feats, chunk, left))
        with torch.no_grad():
            via_torch = m.stream_log_probs(torch.from_numpy(feats)[None], chunk, left)[0].numpy()
        n = _sherpa_loop(sess, m, feats, chunk, left).shape[0]
        assert len(ours) >= 5
        assert theirs == ours == _greedy(via_torch[:n])


def _sherpa_loop(sess, m, feats, chunk, left):
    """sherpa-onnx's WeNet CTC chunk loop over our ONNX file (tests/test_sherpa_interop.py)."""
    from test_sherpa_interop import _stream

    return _stream(lambda feeds: sess.run(None, feeds), feats, m, chunk, left)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wenet_u2pp_causal", "espnet_conformer", "espnet_conformer_legacy",
                                  "nemo_fastconformer_ctc"])
def test_prune_finetune_export_imported(name, tmp_path):
    """Score layers, one-shot prune 25% (at least one layer), fine-tune two steps, save/load, export ONNX
    (streaming where the model streams) and check onnxruntime against PyTorch."""
    import onnxruntime as ort

    from slimasr.export import export_onnx
    from slimasr.prune import oneshot_prune, score_layers

    d, man, ref = _case(name)
    m = _import(name)                                   # a fresh copy: this test trains it
    tok = Tokenizer.from_bytes(m.tokenizer_bytes)
    feats = [torch.from_numpy(_model_input(m, ref, u)) for u in UTTS]
    lens = torch.tensor([f.size(0) for f in feats])
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    ys = [tok.encode(man["utterances"][u]["text"]) for u in UTTS]
    assert all(ys)
    y = torch.nn.utils.rnn.pad_sequence([torch.tensor(t) for t in ys], batch_first=True, padding_value=-1)
    batch = {"feats": x, "feats_lens": lens, "targets": y, "target_lens": torch.tensor([len(t) for t in ys])}
    scores = score_layers(m, [batch], metrics=["correlation", "energy"], progress=False)
    remove = max(1, round(0.25 * m.config.num_layers))      # 25%, at least one layer of the tiny fixtures
    pruned = oneshot_prune(m, scores, "correlation", remove=remove)
    assert pruned.config.num_layers == m.config.num_layers - remove
    pruned.train()
    opt = torch.optim.Adam(pruned.parameters(), lr=1e-4)
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    for _ in range(2):
        out = pruned(x, lens, y, batch["target_lens"])
        assert torch.isfinite(out["loss"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    pruned.eval()
    assert any(not torch.equal(before[k], v) for k, v in pruned.state_dict().items())
    back = load_model(pruned.save(tmp_path / "pruned.pt"))
    assert back.source == m.source and back.config == pruned.config
    one = x[:1, : lens[0]]
    with torch.no_grad():
        lp, _ = back.ctc_log_probs(one)
    files = export_onnx(back, tmp_path / "offline")
    sess = ort.InferenceSession(str(files["model"]), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": one.numpy(), "x_lens": np.array([one.size(1)])})[0]
    assert np.abs(got - lp.numpy()).max() <= TOL
    if back.config.streamable and not back.encoder.subsampling.padded:
        from slimasr.export.onnx import UntrainedChunkSizeWarning

        if back.config.dynamic_chunk:
            files = export_onnx(back, tmp_path / "streaming", streaming=True, chunk_size=4, left_chunks=2)
        else:                                           # ESPnet: trained on whole utterances, and told so
            with pytest.warns(UntrainedChunkSizeWarning):
                files = export_onnx(back, tmp_path / "streaming", streaming=True, chunk_size=4, left_chunks=2)
        sess = ort.InferenceSession(str(files["model"]), providers=["CPUExecutionProvider"])
        theirs = _sherpa_loop(sess, back, one[0].numpy(), 4, 2)
        with torch.no_grad():
            ours = back.stream_log_probs(one, 4, 2)[0].numpy()
        assert np.abs(theirs - ours[: len(theirs)]).max() <= TOL


def test_cli_import_and_provenance(tmp_path):
    d, man, ref = _case("wenet_u2pp_causal")
    out = tmp_path / "m.pt"
    r = CliRunner().invoke(main, ["import", "wenet", str(d / "model"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = load_model(out)
    src = m.source
    assert src["toolkit"] == "wenet" and src["sos_eos_id"] == 2
    assert src["files"]["checkpoint"]["sha256"] == man["files"]["model/final.pt"]["sha256"] \
        if "model/final.pt" in man.get("files", {}) else len(src["files"]["checkpoint"]["sha256"]) == 64
    assert m.config.sos_eos_id == 2
    for sub in ("wenet", "espnet", "nemo"):
        r = CliRunner().invoke(main, ["import", sub, "--help"])
        assert r.exit_code == 0 and "Example" in r.output
    (tmp_path / "x.nemo").write_text("not a tar")
    r = CliRunner().invoke(main, ["import", "nemo", str(tmp_path / "x.nemo"), "--out", str(tmp_path / "y.pt")])
    assert r.exit_code == 1 and "not a .nemo archive" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "y.pt").exists()
    # --out naming the source is refused before the import ("converting in place" would lose the source)
    r = CliRunner().invoke(main, ["import", "nemo", str(tmp_path / "x.nemo"), "--out", str(tmp_path / "x.nemo")])
    assert r.exit_code == 1 and r.output.startswith(f"Error: --out {tmp_path / 'x.nemo'} is also an input")
    assert (tmp_path / "x.nemo").read_text() == "not a tar"
    # ... and so is the WeNet folder's default checkpoint final.pt, which no option names
    w = _copy_wenet(tmp_path)
    before = (w / "final.pt").read_bytes()
    r = CliRunner().invoke(main, ["import", "wenet", str(w), "--out", str(w / "final.pt")])
    assert r.exit_code == 1 and r.output.startswith(f"Error: --out {w / 'final.pt'} is also an input"), r.output
    assert (w / "final.pt").read_bytes() == before


# ------------------------------------------------------------------- a toolkit's files where slimasr's are expected
def _toolkit_files():
    """(kind, path the user might pass, the import command that reads it) for every fixture layout."""
    for name in ("wenet_u2pp_causal", "wenet_conformer_bn"):
        _case(name)
        d = FIX / name / "model"
        yield "wenet", d, f"slimasr import wenet {d} --out model.pt"
        yield "wenet", d / "final.pt", f"slimasr import wenet {d} --out model.pt"
    _case("espnet_conformer")
    exp = FIX / "espnet_conformer" / ESPNET_EXP
    cmd = f"slimasr import espnet --config {exp / 'config.yaml'} --checkpoint {exp / 'model.pth'} --out model.pt"
    yield "espnet", exp, cmd
    yield "espnet", exp / "model.pth", cmd
    for name in ("nemo_fastconformer_ctc", "nemo_conformer_ctc"):     # plain tar, gzip tar
        _case(name)
        f = next((FIX / name / "model").glob("*.nemo"))
        yield "nemo", f, f"slimasr import nemo {f} --out model.pt"
        yield "nemo", f.parent, f"slimasr import nemo {f} --out model.pt"


def test_import_command_recognises_each_toolkit_layout(tmp_path):
    from slimasr.importers import import_command

    for _, path, cmd in _toolkit_files():
        assert import_command(path) == cmd, path
    d, _, _ = _case("wenet_u2pp_causal")
    avg = tmp_path / "u2pp"
    shutil.copytree(d / "model", avg)
    (avg / "final.pt").rename(avg / "avg_5.pt")                       # another checkpoint: named by --checkpoint
    want = f"slimasr import wenet {avg} --checkpoint {avg / 'avg_5.pt'} --out model.pt"
    assert import_command(avg / "avg_5.pt") == want
    renamed = tmp_path / "model.tar"                                   # a .nemo under another name: its members tell
    shutil.copy(next((FIX / "nemo_conformer_ctc" / "model").glob("*.nemo")), renamed)
    assert import_command(renamed) == f"slimasr import nemo {renamed} --out model.pt"
    (tmp_path / "x.pt").write_bytes(b"PK\x03\x04")
    for other in (tmp_path / "x.pt", FIX / "audio" / "utt0.wav", FIX / "audio", tmp_path / "missing"):
        assert import_command(other) is None, other


def test_the_suggested_import_command_runs(tmp_path):
    """The command an error names works as printed (WeNet's: folder, and the default checkpoint)."""
    from slimasr.importers import import_command

    d, _, _ = _case("wenet_conformer_bn")
    args = import_command(d / "model" / "final.pt").split()[1:]
    args[args.index("--out") + 1] = str(tmp_path / "m.pt")
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert load_model(tmp_path / "m.pt").source["toolkit"] == "wenet"


@pytest.mark.parametrize("command", [["decode", "--data", "MANIFEST"], ["transcribe", "WAV"], ["info"],
                                     ["export", "onnx", "--out", "OUT"], ["bench", "--data", "MANIFEST", "--json",
                                                                          "OUT"],
                                     ["prune", "oneshot", "--metric", "last", "--keep", "1", "--out", "OUT"],
                                     ["train", "--train", "MANIFEST", "--out", "OUT", "--init"],
                                     ["average", "--out", "OUT"], ["serve", "--port", "0"]])
def test_a_toolkit_model_given_as_a_model_names_its_import_command(command, tmp_path):
    """The first thing a WeNet / ESPnet / NeMo user tries: their own files as --model. Every command answers with
    one line that names the `slimasr import` command reading them, never a traceback."""
    wav = FIX / "audio" / "utt0.wav"
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": str(wav), "duration": 1.6, "text": "open"}) + "\n")
    fill = {"MANIFEST": tmp_path / "m.jsonl", "WAV": wav, "OUT": tmp_path / "out"}
    for kind, path, cmd in _toolkit_files():
        if command[0] == "serve" and path.is_dir() and kind != "wenet":
            continue                   # serve reads a directory as an export: named by what it lacks (WeNet's below)
        if command[0] in ("average", "train") and path.is_dir():
            continue                   # these take a file (click names the directory)
        args = [str(fill.get(a, a)) for a in command]
        if command[0] == "average":
            args = [args[0], str(path), *args[1:]]
        elif command[0] == "train":
            args.append(str(path))
        else:
            args += ["--model", str(path)]
        r = CliRunner().invoke(main, args)
        assert r.exit_code != 0 and "Traceback" not in r.output, (args, r.output)
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
        errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and f"import it first with `{cmd}`" in errors[0], (args, r.output)


def test_import_of_the_wrong_toolkit_names_the_right_one():
    w, _, _ = _case("wenet_u2pp_causal")
    exp = FIX / "espnet_conformer" / ESPNET_EXP
    _case("espnet_conformer")
    r = CliRunner().invoke(main, ["import", "wenet", str(exp), "--out", "never.pt"])
    assert r.exit_code == 1 and "missing WeNet config train.yaml" in r.output
    assert f"another toolkit: `slimasr import espnet --config {exp / 'config.yaml'}" in r.output
    r = CliRunner().invoke(main, ["import", "nemo", str(w / "model" / "final.pt"), "--out", "never.pt"])
    assert r.exit_code == 1 and f"another toolkit: `slimasr import wenet {w / 'model'} --out model.pt`" in r.output
    r = CliRunner().invoke(main, ["import", "wenet", str(w / "model" / "final.pt"), "--out", "never.pt"])
    assert r.exit_code == 1 and "is a file; expected the WeNet model folder" in r.output
    assert f"`slimasr import wenet {w / 'model'} --out model.pt`" in r.output
    assert not Path("never.pt").exists()


# ---------------------------------------------------------------------------------------------- bad input
def _copy_wenet(tmp_path, name="wenet_u2pp_causal"):
    _case(name)
    dst = tmp_path / name
    shutil.copytree(FIX / name / "model", dst)
    return dst


def _one_line(e):
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")   # torch 2.11 deprecates TorchScript itself
def test_wenet_checkpoint_named_other_than_final_or_torchscript(tmp_path):
    """A folder whose checkpoint is avg_N.pt names it (and --checkpoint); WeNet's runtime final.zip (TorchScript)
    is refused as compiled code, with the checkpoint to give instead."""
    src = _copy_wenet(tmp_path)
    (src / "final.pt").rename(src / "avg_5.pt")
    with pytest.raises(ImportFailed) as e:
        import_wenet(src)
    assert "missing WeNet checkpoint" in _one_line(e) and "the folder has avg_5.pt: name one with --checkpoint" in \
        str(e.value)
    assert import_wenet(src, src / "avg_5.pt").config.num_layers == 3

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.lin(x)

    torch.jit.save(torch.jit.script(Tiny()), src / "final.zip")
    with pytest.raises(ImportFailed) as e:
        import_wenet(src, src / "final.zip")
    assert "a TorchScript model" in _one_line(e) and "give the training checkpoint (final.pt, avg_N.pt)" in \
        str(e.value)


def test_bad_wenet_inputs(tmp_path):
    import yaml

    src = _copy_wenet(tmp_path)
    # a state_dict that does not match its config: missing and unexpected keys listed
    sd = torch.load(src / "final.pt", weights_only=True)
    sd.pop("encoder.encoders.1.norm_ff.weight")
    sd["encoder.encoders.0.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(ImportFailed) as e:
        import_wenet(src, tmp_path / "bad.pt")
    msg = _one_line(e)
    assert "bad.pt" in msg and "encoder.encoders.1.norm_ff.weight" in msg and "encoder.encoders.0.extra" in msg
    # an option slimasr cannot represent: named, with what is supported
    conf = yaml.safe_load((src / "train.yaml").read_text())
    conf["encoder_conf"]["selfattention_layer_type"] = "selfattn"
    bad_yaml = tmp_path / "opt"
    shutil.copytree(src, bad_yaml)
    (bad_yaml / "train.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(ImportFailed) as e:
        import_wenet(bad_yaml)
    assert "selfattention_layer_type='selfattn'" in _one_line(e) and "rel_selfattn" in str(e.value)
    # missing token table, BPE model, CMVN
    for missing, what in (("units.txt", "units.txt"), ("tiny_unigram60.model", "BPE model")):
        dd = tmp_path / f"no-{missing}"
        shutil.copytree(src, dd)
        (dd / missing).unlink()
        with pytest.raises(ImportFailed, match=what) as e:
            import_wenet(dd)
        _one_line(e)
    dd = tmp_path / "no-cmvn"
    shutil.copytree(src, dd)
    (dd / "global_cmvn").unlink()
    sd = torch.load(src / "final.pt", weights_only=True)
    sd = {k: v for k, v in sd.items() if "global_cmvn" not in k}
    torch.save(sd, dd / "final.pt")
    with pytest.raises(ImportFailed, match="CMVN") as e:
        import_wenet(dd)
    _one_line(e)
    # ... and with the CMVN file present, the statistics come from it (JSON and Kaldi text agree)
    shutil.copy(src / "global_cmvn", dd / "global_cmvn")
    a = import_wenet(dd)
    shutil.copy(src / "global_cmvn.kaldi", dd / "global_cmvn")
    b = import_wenet(dd)
    ref = _model("wenet_u2pp_causal")
    assert torch.allclose(a.encoder.cmvn_istd, ref.encoder.cmvn_istd, rtol=1e-5)
    assert torch.allclose(a.encoder.cmvn_mean, b.encoder.cmvn_mean, rtol=1e-6)
    # vocabulary size not matching the CTC head
    dd = tmp_path / "vocab"
    shutil.copytree(src, dd)
    lines = (dd / "units.txt").read_text().splitlines()
    (dd / "units.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ImportFailed, match="61 tokens but the CTC head has 62") as e:
        import_wenet(dd)
    _one_line(e)
    # a checkpoint from another model family
    torch.save({"model.layers.0.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ImportFailed, match="not a WeNet Conformer checkpoint") as e:
        import_wenet(src, tmp_path / "other.pt")
    _one_line(e)
    with pytest.raises(ImportFailed, match="expected a WeNet model folder"):
        import_wenet(tmp_path / "nowhere")


def test_truncated_bpe_model_is_a_one_line_error(tmp_path):
    """A truncated SentencePiece model (WeNet bpe_path, ESPnet bpemodel) is named in one line, not a traceback."""
    _case("wenet_u2pp_causal")
    d = tmp_path / "wenet"
    shutil.copytree(FIX / "wenet_u2pp_causal" / "model", d)
    (d / "tiny_unigram60.model").write_bytes((d / "tiny_unigram60.model").read_bytes()[:50])
    with pytest.raises(ImportFailed, match="tiny_unigram60.model: not a SentencePiece model") as e:
        import_wenet(d)
    _one_line(e)
    _case("espnet_conformer")
    exp = FIX / "espnet_conformer" / ESPNET_EXP
    bpe = tmp_path / "bpe.model"
    bpe.write_bytes(b"\x0a\x0b not a model")
    with pytest.raises(ImportFailed, match="bpe.model: not a SentencePiece model") as e:
        import_espnet(exp / "config.yaml", exp / "model.pth", bpe=bpe)
    _one_line(e)
    r = CliRunner().invoke(main, ["import", "wenet", str(d), "--out", str(tmp_path / "x.pt")])
    assert r.exit_code != 0 and "not a SentencePiece model" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.pt").exists()


def test_bad_espnet_inputs(tmp_path):
    import yaml

    _case("espnet_conformer")
    exp = FIX / "espnet_conformer" / ESPNET_EXP
    bpe = FIX / "espnet_conformer" / "model" / "data" / "en_token_list" / "bpe_unigram60" / "bpe.model"
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    cases = {"interctc_use_conditioning": True, "input_layer": "vgg2l"}
    for key, value in cases.items():
        c = json.loads(json.dumps(conf))
        c["encoder_conf"][key] = value
        p = tmp_path / f"{key}.yaml"
        p.write_text(yaml.safe_dump(c))
        with pytest.raises(ImportFailed, match=f"encoder_conf.{key}") as e:
            import_espnet(p, exp / "model.pth", bpe=bpe)
        assert "supported" in _one_line(e)
    c = json.loads(json.dumps(conf))
    c["bpemodel"] = "nowhere/bpe.model"
    p = tmp_path / "nobpe.yaml"
    p.write_text(yaml.safe_dump(c))
    with pytest.raises(ImportFailed, match="missing BPE model") as e:
        import_espnet(p, exp / "model.pth")
    _one_line(e)
    # no normalize buffers in the checkpoint and no stats file: missing CMVN
    sd = torch.load(exp / "model.pth", weights_only=True)
    torch.save({k: v for k, v in sd.items() if not k.startswith("normalize.")}, tmp_path / "nonorm.pth")
    c = json.loads(json.dumps(conf))
    c["normalize_conf"]["stats_file"] = "nowhere/feats_stats.npz"
    p = tmp_path / "nostats.yaml"
    p.write_text(yaml.safe_dump(c))
    with pytest.raises(ImportFailed, match="CMVN statistics") as e:
        import_espnet(p, tmp_path / "nonorm.pth", bpe=bpe)
    _one_line(e)
    # ... the stats file gives the same normalisation as the checkpoint's buffers
    a = import_espnet(exp / "config.yaml", tmp_path / "nonorm.pth")
    assert a.source["cmvn"] == "feats_stats.npz"
    assert torch.allclose(a.encoder.cmvn_istd, _model("espnet_conformer").encoder.cmvn_istd, rtol=1e-5)
    # legacy relative positions import, but only offline
    c = json.loads(json.dumps(conf))
    c["encoder_conf"]["rel_pos_type"] = "legacy"
    p = tmp_path / "legacy.yaml"
    p.write_text(yaml.safe_dump(c))
    legacy = import_espnet(p, exp / "model.pth", bpe=bpe)
    assert legacy.config.pos_enc == "legacy" and not legacy.config.streamable
    with pytest.raises(ValueError, match="cannot stream"):
        legacy.stream_log_probs(torch.randn(1, 40, 80), 4, 2)
    torch.save({"encoder.layers.0.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ImportFailed, match="not an ESPnet Conformer CTC checkpoint"):
        import_espnet(exp / "config.yaml", tmp_path / "other.pth")


def test_bad_nemo_inputs(tmp_path):
    (tmp_path / "x.nemo").write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(ImportFailed, match="not a .nemo archive") as e:
        import_nemo(tmp_path / "x.nemo")
    _one_line(e)
    with tarfile.open(tmp_path / "empty.nemo", "w:gz") as tar:
        p = tmp_path / "readme.txt"
        p.write_text("hello")
        tar.add(p, arcname="./readme.txt")
    with pytest.raises(ImportFailed, match="missing model_config.yaml") as e:
        import_nemo(tmp_path / "empty.nemo")
    _one_line(e)
    with pytest.raises(ImportFailed, match="missing NeMo model"):
        import_nemo(tmp_path / "absent.nemo")
    d, man, ref = _case("nemo_fastconformer_ctc")
    src = next((d / "model").glob("*.nemo"))
    # gzip works like plain tar
    gz = tmp_path / "gz.nemo"
    with tarfile.open(src) as a, tarfile.open(gz, "w:gz") as b:
        for member in a.getmembers():
            b.addfile(member, a.extractfile(member) if member.isfile() else None)
    m = import_nemo(gz)
    assert m.config.subsampling == "dw_striding8" and not m.config.final_norm
    assert m.source["vocabulary_permutation"]["blank_source_id"] == m.config.vocab_size - 1


def test_streaming_export_refused_where_the_model_cannot_stream(tmp_path):
    from slimasr.export import export_onnx
    from slimasr.model import build_model

    for kw, why in ((dict(pos_enc="legacy"), "cannot stream"), (dict(subsampling="striding4"), "padded")):
        with pytest.raises(ValueError, match=why):
            export_onnx(build_model("tiny", **kw), tmp_path / "x", streaming=True, chunk_size=4, left_chunks=2)


def _rewrite_nemo(src, dst, edit_weights=None, edit_config=None):
    """A copy of a .nemo archive with its weights and/or config changed."""
    import io

    import yaml

    with tarfile.open(src) as a, tarfile.open(dst, "w") as b:
        for member in a.getmembers():
            data = a.extractfile(member).read() if member.isfile() else None
            if data is not None and member.name.endswith("model_weights.ckpt") and edit_weights:
                sd = edit_weights(torch.load(io.BytesIO(data), weights_only=True))
                buf = io.BytesIO()
                torch.save(sd, buf)
                data = buf.getvalue()
            if data is not None and member.name.endswith("model_config.yaml") and edit_config:
                data = yaml.safe_dump(edit_config(yaml.safe_load(data))).encode()
            if data is not None:
                member.size = len(data)
                b.addfile(member, io.BytesIO(data))
            else:
                b.addfile(member)


def test_nemo_tied_biases_and_refused_options(tmp_path):
    """untie_biases: false keeps one pos_bias_u/v pair in the encoder: every layer gets it. Limited attention
    context is refused with the option named."""
    d, man, ref = _case("nemo_fastconformer_ctc")
    src = next((d / "model").glob("*.nemo"))

    def tie(sd):
        for b in ("pos_bias_u", "pos_bias_v"):
            sd[f"encoder.{b}"] = sd[f"encoder.layers.0.self_attn.{b}"]
            for k in [k for k in sd if k.endswith(f"self_attn.{b}")]:
                del sd[k]
        return sd

    _rewrite_nemo(src, tmp_path / "tied.nemo", tie)
    m = import_nemo(tmp_path / "tied.nemo")
    u0 = m.encoder.layers[0].attn.pos_bias_u
    assert all(torch.equal(layer.attn.pos_bias_u, u0) for layer in m.encoder.layers)
    assert not torch.equal(_model("nemo_fastconformer_ctc").encoder.layers[1].attn.pos_bias_u, u0)

    def limited(conf):
        conf["encoder"]["att_context_size"] = [64, 0]
        return conf

    _rewrite_nemo(src, tmp_path / "limited.nemo", edit_config=limited)
    with pytest.raises(ImportFailed, match="att_context_size") as e:
        import_nemo(tmp_path / "limited.nemo")
    _one_line(e)

    def other_family(sd):
        return {"model.0.weight": torch.zeros(2)}

    _rewrite_nemo(src, tmp_path / "other.nemo", other_family)
    with pytest.raises(ImportFailed, match="not a NeMo Conformer CTC checkpoint"):
        import_nemo(tmp_path / "other.nemo")


@pytest.mark.parametrize("name", CASES)
def test_decode_cli_gives_toolkit_text(name, tmp_path):
    """`slimasr decode` of the imported model (batched, its own front-end from the checkpoint) writes the
    toolkit's greedy texts."""
    d, man, ref = _case(name)
    model = tmp_path / "m.pt"
    _model(name).save(model)
    rows = [{"audio_filepath": str(FIX / "audio" / f"{u}.wav"), "duration": _wave(u).size / 16000,
             "text": man["utterances"][u]["text"]} for u in UTTS]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = CliRunner().invoke(main, ["decode", "--model", str(model), "--data", str(tmp_path / "m.jsonl"),
                                  "--out", str(tmp_path / "hyps.jsonl")])
    assert r.exit_code == 0, r.output
    hyps = [json.loads(line) for line in (tmp_path / "hyps.jsonl").read_text().splitlines()]
    by_file = {Path(h["audio_filepath"]).stem: h["text"] for h in hyps}
    assert by_file == {u: man["greedy_texts"][u] for u in UTTS}


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_torch_free_runtime_gives_toolkit_text(name, tmp_path):
    """The exported offline ONNX through the torch-free runtime (front-end from the export's metadata) gives the
    toolkit's greedy texts; for WeNet U2++ the streaming export through the runtime's OnlineRecognizer gives the
    text of PyTorch's stream_step on the same features."""
    from slimasr.export import export_onnx
    from slimasr.runtime import OfflineRecognizer, OnlineRecognizer

    d, man, ref = _case(name)
    m = _model(name)
    off = OfflineRecognizer.from_onnx(export_onnx(m, tmp_path / "offline")["model"].parent)
    assert off.frontend == m.frontend          # read from the export's metadata: test_features_and_text_from_audio
    texts = [r.text for r in off.transcribe([_wave(u) for u in UTTS])]
    assert texts == [man["greedy_texts"][u] for u in UTTS]
    if name == "wenet_u2pp_causal":
        on = OnlineRecognizer.from_onnx(export_onnx(m, tmp_path / "stream", streaming=True, chunk_size=8,
                                                    left_chunks=2)["model"].parent)
        tok = Tokenizer.from_bytes(m.tokenizer_bytes)
        for u in UTTS:
            feats = torch.from_numpy(compute_features(_wave(u), m.frontend))[None]
            with torch.no_grad():
                want = tok.decode(_greedy(m.stream_log_probs(feats, 8, 2)[0].numpy()))
            assert on.transcribe(_wave(u)).text == want


@pytest.mark.slow
def test_train_init_fine_tunes_an_imported_model(tmp_path):
    """`slimasr train --init` on an imported model: its front-end computes the training features, its token
    table encodes the transcripts, and the result keeps the layer variants, front-end and provenance."""
    d, man, ref = _case("nemo_fastconformer_ctc")
    model = tmp_path / "m.pt"
    _import("nemo_fastconformer_ctc").save(model)
    rows = [{"audio_filepath": str(FIX / "audio" / f"{u}.wav"), "duration": _wave(u).size / 16000,
             "text": man["utterances"][u]["text"]} for u in UTTS]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = CliRunner().invoke(main, ["train", "--init", str(model), "--train", str(tmp_path / "m.jsonl"), "--dev",
                                  str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "ft"), "--epochs", "1"])
    assert r.exit_code == 0, r.output
    ft, orig = load_model(tmp_path / "ft" / "model.pt"), load_model(model)
    assert ft.config.subsampling == "dw_striding8" and ft.frontend == orig.frontend and ft.source == orig.source
    assert any(not torch.equal(a, b) for a, b in zip(ft.state_dict().values(), orig.state_dict().values()))


def test_runtime_drops_sos_eos_by_symbol_not_position():
    """Imported vocabularies put <sos/eos> elsewhere (WeNet: id 2) or nowhere (NeMo): the runtime's decoders drop
    exactly that symbol and keep a real last token."""
    from slimasr.runtime.decoders import GreedyDecoder, Vocabulary

    def peaky(ids, v):
        lp = np.full((2 * len(ids), v), -10.0, np.float32)
        for k, i in enumerate(ids):
            lp[2 * k, i], lp[2 * k + 1, 0] = 0.0, 0.0
        return lp

    wenet = Vocabulary(["<blank>", "<unk>", "<sos/eos>", "\u2581a", "\u2581b"])
    assert GreedyDecoder(wenet).decode(peaky([3, 2, 4], 5)).tokens == (3, 4)
    nemo = Vocabulary(["<blank>", "\u2581a", "\u2581b"])
    h = GreedyDecoder(nemo).decode(peaky([1, 2], 3))
    assert h.tokens == (1, 2) and h.text == "a b"


def test_import_with_dynamic_chunk_for_streaming_fine_tuning(tmp_path):
    _case("espnet_conformer")
    exp = FIX / "espnet_conformer" / ESPNET_EXP
    out = tmp_path / "m.pt"
    r = CliRunner().invoke(main, ["import", "espnet", "--config", str(exp / "config.yaml"), "--checkpoint",
                                  str(exp / "model.pth"), "--dynamic-chunk", "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = load_model(out)
    assert m.config.dynamic_chunk and not _model("espnet_conformer").config.dynamic_chunk
    m.train()
    assert {m.sample_chunking()[0] is None for _ in range(50)} == {True, False}   # chunked batches are drawn


def test_espnet_utterance_mvn_front_end():
    """ESPnet's utterance_mvn (defaults: means only) as a front-end setting: the STFT log-mel minus its
    per-utterance mean; not streamable (the global_mvn one streams)."""
    import dataclasses

    _case("espnet_conformer")
    fe = _model("espnet_conformer").frontend
    raw = compute_features(_wave("utt0"), fe)
    mvn = dataclasses.replace(fe, cmvn="utterance_mean")
    got = compute_features(_wave("utt0"), mvn)
    np.testing.assert_allclose(got, raw - raw.mean(axis=0), atol=1e-5)
    assert fe.kind == "stft_mel" and fe.streamable and not mvn.streamable


def test_fixture_files_match_their_manifests():
    """Every committed model file has the size and sha256 its case's manifest.json records (a fixture edited or
    truncated by hand, or an LFS pointer instead of the file, fails here rather than as a numeric mismatch)."""
    import hashlib

    cases = sorted(p.parent for p in FIX.glob("*/manifest.json"))
    assert {c.name for c in cases} >= set(CASES)
    for case in cases:
        files = json.loads((case / "manifest.json").read_text())["files"]
        on_disk = {str(p.relative_to(case)) for p in case.rglob("*") if p.is_file()} - {"manifest.json",
                                                                                         "reference.npz"}
        assert on_disk == set(files), (case.name, on_disk ^ set(files))
        for rel, want in files.items():
            data = (case / rel).read_bytes()
            assert len(data) == want["bytes"], (case.name, rel)
            assert hashlib.sha256(data).hexdigest() == want["sha256"], (case.name, rel)


def test_sos_eos_none_for_nemo_in_config_and_export(tmp_path):
    """NeMo vocabularies have no <sos/eos>: the config says so (None, not a guessed last id) and so do the
    export's metadata and slimasr_export.json; WeNet's and ESPnet's ids travel as they are."""
    from slimasr.export import export_onnx
    from slimasr.export.onnx import read_metadata
    from slimasr.model import build_model

    for name, want in (("nemo_conformer_ctc", None), ("wenet_u2pp_causal", 2)):
        _case(name)
        m = _model(name)
        assert m.config.sos_eos_id == want and Tokenizer.from_bytes(m.tokenizer_bytes).sos_eos_id == want
        files = export_onnx(m, tmp_path / name)
        assert read_metadata(files["model"])["slimasr_sos_eos_id"] == json.dumps(want)
        assert json.loads(Path(files["config"]).read_text())["sos_eos_id"] == want
        assert load_model(m.save(tmp_path / f"{name}.pt")).config.sos_eos_id == want
    _case("espnet_conformer")
    esp = _model("espnet_conformer").config
    assert esp.sos_eos_id == esp.vocab_size - 1
    assert build_model("tiny").config.sos_eos_id == build_model("tiny").config.vocab_size - 1
    with pytest.raises(ValueError, match="has_sos_eos"):
        build_model("tiny", has_sos_eos=False)            # the tiny config has an attention decoder


def test_train_dynamic_chunk_option(tmp_path):
    """`slimasr train --init M --dynamic-chunk` switches dynamic chunk training on for a model imported without
    it (the fine-tuned model then draws chunked batches); a model that cannot stream is refused by name."""
    d, man, ref = _case("espnet_conformer")
    _case("espnet_conformer_legacy")
    rows = [{"audio_filepath": str(FIX / "audio" / f"{u}.wav"), "duration": _wave(u).size / 16000,
             "text": man["utterances"][u]["text"]} for u in UTTS]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("espnet_conformer", "espnet_conformer_legacy"):
        _model(name).save(tmp_path / f"{name}.pt")
    args = ["train", "--train", str(tmp_path / "m.jsonl"), "--epochs", "1", "--dynamic-chunk"]
    r = CliRunner().invoke(main, args + ["--init", str(tmp_path / "espnet_conformer_legacy.pt"),
                                         "--out", str(tmp_path / "legacy")])
    assert r.exit_code == 1 and "pos_enc='legacy'" in r.output and "Traceback" not in r.output
    assert not _model("espnet_conformer").config.dynamic_chunk
    r = CliRunner().invoke(main, args + ["--init", str(tmp_path / "espnet_conformer.pt"), "--out",
                                         str(tmp_path / "ft")])
    assert r.exit_code == 0, r.output
    ft = load_model(tmp_path / "ft" / "model.pt")
    assert ft.config.dynamic_chunk and ft.config.replace(dynamic_chunk=False) == _model("espnet_conformer").config
    ft.train()
    assert {ft.sample_chunking()[0] is None for _ in range(50)} == {True, False}


def test_train_dynamic_chunk_refuses_a_front_end_that_needs_the_whole_utterance(tmp_path):
    """NeMo's per-utterance feature normalisation can never run chunk by chunk: `train --init M --dynamic-chunk`
    says so before any training, instead of training chunk sizes the model can never be served with."""
    d, man, ref = _case("nemo_fastconformer_ctc")
    rows = [{"audio_filepath": str(FIX / "audio" / f"{u}.wav"), "duration": _wave(u).size / 16000,
             "text": man["utterances"][u]["text"]} for u in UTTS]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _model("nemo_fastconformer_ctc").save(tmp_path / "fc.pt")
    r = CliRunner().invoke(main, ["train", "--train", str(tmp_path / "m.jsonl"), "--epochs", "1", "--dynamic-chunk",
                                  "--init", str(tmp_path / "fc.pt"), "--out", str(tmp_path / "ft")])
    assert r.exit_code == 1 and "per utterance" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "ft" / "model.pt").exists()


def test_bench_skips_chunked_runs_of_models_that_cannot_stream(tmp_path):
    """Chunked bench runs of a model with per-utterance feature normalisation (NeMo) or padded subsampling on
    an ONNX backend are skipped with the reason, not failed; the offline run of the same model runs."""
    from slimasr.bench.runner import ModelSpec, plan_runs, run_benchmark

    d, man, ref = _case("nemo_fastconformer_ctc")
    _model("nemo_fastconformer_ctc").save(tmp_path / "fc.pt")
    rows = [{"audio_filepath": str(FIX / "audio" / f"{u}.wav"), "duration": _wave(u).size / 16000,
             "text": man["utterances"][u]["text"]} for u in UTTS]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    specs = plan_runs([ModelSpec.parse(str(tmp_path / "fc.pt"))], ["torch", "onnx"], ["chunked"],
                      data=str(tmp_path / "m.jsonl"), threads=1, warmup=0)
    res = run_benchmark(specs, tmp_path / "work", floor=False, progress=False)
    assert [r.get("error") for r in res["runs"]] == [None, None]
    assert all("per utterance" in r["skipped"] and "--mode offline" in r["skipped"] for r in res["runs"])
    fe = _model("nemo_fastconformer_ctc").frontend
    import dataclasses

    cfg = _model("nemo_fastconformer_ctc").config
    assert cfg.streaming_refusal(dataclasses.replace(fe, cmvn="global")) is None     # PyTorch streams x8 padded
    assert "padded" in cfg.streaming_refusal(dataclasses.replace(fe, cmvn="global"), onnx=True)


def test_sherpa_onnx_refuses_features_it_does_not_compute():
    """sherpa-onnx computes slimasr's default Kaldi fbank itself: an imported model with STFT features or other
    fbank settings (WeNet's snip_edges, Nyquist high frequency) is refused with the settings named, not decoded
    from wrong features."""
    from slimasr.decoding import sherpa_frontend_refusal
    from slimasr.model import build_model

    assert sherpa_frontend_refusal(build_model("tiny").frontend) is None
    for name, why in (("wenet_u2pp_causal", "snip_edges=True"), ("espnet_conformer", "stft_mel"),
                      ("nemo_conformer_ctc", "utterance_nemo")):
        _case(name)
        assert why in sherpa_frontend_refusal(_model(name).frontend)


OFFLINE_ONLY = ["espnet_conformer_legacy", "nemo_fastconformer_ctc", "nemo_conformer_ctc"]


@pytest.mark.parametrize("name", OFFLINE_ONLY)
def test_serve_offline_model_gives_toolkit_text(name, tmp_path):
    """`slimasr serve` of an offline export (a model that cannot stream: legacy positions, per-utterance feature
    normalisation) decodes each utterance when the client ends it: one final result, the toolkit's greedy text,
    over both protocols; the export itself is refused as streaming, with the reason."""
    pytest.importorskip("websockets")
    import asyncio

    from serve_helpers import Server
    from websockets.asyncio.client import connect

    from slimasr.export import export_onnx
    from slimasr.runtime import OfflineRecognizer

    d, man, ref = _case(name)
    m = _model(name)
    with pytest.raises(ValueError, match="cannot stream|per utterance"):
        export_onnx(m, tmp_path / "streaming", streaming=True, chunk_size=8, left_chunks=2)
    out = export_onnx(m, tmp_path / "offline")["model"].parent

    async def sherpa(url, x):
        async with connect(url) as ws:
            for k in range(0, x.size, 1600):
                await ws.send(x[k:k + 1600].astype("<f4").tobytes())
            await ws.send("Done")
            return [msg async for msg in ws]

    async def wenet(url, x):
        async with connect(url) as ws:
            await ws.send(json.dumps({"signal": "start", "nbest": 1, "continuous_decoding": False}))
            pcm = (np.clip(x, -1, 32767 / 32768) * 32768).astype("<i2")
            for k in range(0, pcm.size, 1600):
                await ws.send(pcm[k:k + 1600].tobytes())
            await ws.send(json.dumps({"signal": "end"}))
            return [json.loads(msg) async for msg in ws]

    r = CliRunner().invoke(main, ["serve", "--model", str(out), "--chunk-size", "8"])
    assert r.exit_code == 1 and "offline export" in r.output and "--chunk-size" in r.output
    server = Server(out, "--workers", "1", log_dir=tmp_path)
    try:
        assert "offline: each utterance decoded when the client ends it" in server.output()
        for utt in UTTS:
            *results, done = asyncio.run(sherpa(server.url, _wave(utt)))
            assert done == "Done!" and len(results) == 1
            final = json.loads(results[0])
            assert final["is_final"] and final["text"] == man["greedy_texts"][utt]
        replies = asyncio.run(wenet(server.url, _wave("utt0")))
        finals = [r for r in replies if r.get("type") == "final_result"]
        assert len(finals) == 1 and not any(r.get("type") == "partial_result" for r in replies)
        pcm = (np.clip(_wave("utt0"), -1, 32767 / 32768) * 32768).astype(np.int16)      # what WeNet clients send
        want = OfflineRecognizer.from_onnx(out).transcribe(pcm).text
        assert json.loads(finals[0]["nbest"])[0]["sentence"] == want and want
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["espnet_conformer", "nemo_conformer_ctc"])
def test_stft_features_stream(name):
    """The STFT log-mel front-ends stream: OnlineFeatureExtractor fed the audio in pieces of any size equals the
    whole-utterance features (centre padding: ESPnet's reflection at the start, NeMo's zeros and pre-emphasis);
    per-utterance normalisation is refused on a stream, by name."""
    import dataclasses

    from slimasr.features import OnlineFeatureExtractor

    _case(name)
    fe = _model(name).frontend
    if fe.cmvn != "global":
        with pytest.raises(ValueError, match="needs whole utterances"):
            OnlineFeatureExtractor(fe)
        fe = dataclasses.replace(fe, cmvn="global")          # NeMo's mel itself (normalize: NA) streams
    for utt in UTTS:
        w = _wave(utt)
        full = compute_features(w, fe)
        for piece in (1, 77, 160, 2000):
            ex = OnlineFeatureExtractor(fe)
            ready = []
            for k in range(0, w.size, piece):
                ex.accept_waveform(w[k:k + piece])
                ready.append(ex.num_frames_ready)
            ex.input_finished()
            got = ex.get_frames(0, ex.num_frames_ready)
            assert got.shape == full.shape and np.abs(got - full).max() <= 1e-5
            assert ready[-1] >= full.shape[0] - 3                   # frames come out while the audio arrives


def test_espnet_streams_in_the_runtime(tmp_path):
    """An ESPnet model with global_mvn (rel_pos_type latest) streams through the torch-free runtime: its
    streaming export in the OnlineRecognizer gives the text of PyTorch's stream_step on the same features."""
    from slimasr.export import export_onnx
    from slimasr.export.onnx import UntrainedChunkSizeWarning
    from slimasr.runtime import OnlineRecognizer

    _case("espnet_conformer")
    m = _model("espnet_conformer")
    with pytest.warns(UntrainedChunkSizeWarning):
        out = export_onnx(m, tmp_path / "stream", streaming=True, chunk_size=8, left_chunks=2)["model"].parent
    on = OnlineRecognizer.from_onnx(out)
    tok = Tokenizer.from_bytes(m.tokenizer_bytes)
    for u in UTTS:
        feats = torch.from_numpy(compute_features(_wave(u), m.frontend))[None]
        with torch.no_grad():
            want = tok.decode(_greedy(m.stream_log_probs(feats, 8, 2)[0].numpy()))
        assert on.transcribe(_wave(u)).text == want and want


@pytest.mark.parametrize("name", ["wenet_conformer_bn", "espnet_conformer"])
def test_transcribe_full_context_model_decodes_whole_as_decode_does(name, tmp_path, monkeypatch):
    """A model that can stream but was never trained on chunks (WeNet without dynamic chunks, an ESPnet import):
    `slimasr transcribe` of the .pt decodes each file whole, as `slimasr decode` does, and gives the toolkit's
    greedy text, saying why on stderr; --chunk-size streams it anyway."""
    d, man, ref = _case(name)
    monkeypatch.setenv("SLIMASR_CACHE", str(tmp_path / "cache"))
    m = _model(name)
    assert not m.config.dynamic_chunk and m.config.streamable
    model = m.save(tmp_path / "m.pt")
    wavs = [str(FIX / "audio" / f"{u}.wav") for u in UTTS]
    r = CliRunner().invoke(main, ["transcribe", "--no-progress", "--model", str(model), *wavs])
    assert r.exit_code == 0, r.output
    assert r.stdout == "".join(f"{w}\t{man['greedy_texts'][u]}\n" for w, u in zip(wavs, UTTS))
    assert "trained with full context only" in r.stderr and "each input is decoded whole" in r.stderr
    from slimasr.export.onnx import UntrainedChunkSizeWarning

    with pytest.warns(UntrainedChunkSizeWarning, match="trained with full context only"):
        r = CliRunner().invoke(main, ["transcribe", "--no-progress", "--model", str(model), "--chunk-size", "16",
                                      wavs[0]])
    assert r.exit_code == 0 and "decoded whole" not in r.stderr and r.stdout.strip(), r.output


@pytest.mark.parametrize("name", OFFLINE_ONLY)
def test_transcribe_offline_model_gives_toolkit_text(name, tmp_path, monkeypatch):
    """`slimasr transcribe` of a model that cannot stream says why on stderr and decodes each file whole: the
    toolkit's greedy text, from the .pt model (torch and the runtime) and from its offline export; asking it
    for a chunk size is refused with the reason."""
    d, man, ref = _case(name)
    monkeypatch.setenv("SLIMASR_CACHE", str(tmp_path / "cache"))
    model = _model(name).save(tmp_path / "m.pt")
    wavs = [str(FIX / "audio" / f"{u}.wav") for u in UTTS]
    want = "".join(f"{w}\t{man['greedy_texts'][u]}\n" for w, u in zip(wavs, UTTS))
    for backend in ("torch", "onnx"):
        r = CliRunner().invoke(main, ["transcribe", "--no-progress", "--model", str(model), "--backend", backend,
                                      *wavs])
        assert r.exit_code == 0, r.output
        assert r.stdout == want and "each input is decoded whole" in r.stderr
    from slimasr.export import export_onnx

    out = export_onnx(_model(name), tmp_path / "offline")["model"].parent
    r = CliRunner().invoke(main, ["transcribe", "--no-progress", "--model", str(out), *wavs])
    assert r.exit_code == 0 and r.stdout == want, r.output
    r = CliRunner().invoke(main, ["transcribe", "--no-progress", "--model", str(model), "--chunk-size", "8", wavs[0]])
    assert r.exit_code != 0 and "--chunk-size" in r.output and "Traceback" not in r.output
