"""Recognise another toolkit's model files by their layout, to tell a user who passes one where slimasr expects its
own model which ``slimasr import`` command reads it. Torch-free (the runtime's errors use it too); only names and,
for a tar archive, its member list are read.

The layouts are the ones the importers read (:mod:`slimasr.importers.wenet`, ``espnet``, ``nemo``): a WeNet model
folder holds ``train.yaml`` beside its checkpoints (``final.pt``, ``avg_N.pt``); an espnet2 experiment folder holds
``config.yaml`` beside its ``.pth`` checkpoints; a NeMo model is a ``.nemo`` tar (plain or gzip) holding
``model_config.yaml``.
"""
from __future__ import annotations

import os
import shlex
import tarfile
from pathlib import Path

__all__ = ["import_command", "import_hint"]

_ESPNET_PREFERRED = ("valid.acc.ave.pth", "valid.acc.best.pth", "model.pth")


def _q(p: Path) -> str:
    return shlex.quote(str(p))


def _is_nemo(path: Path) -> bool:
    if path.suffix == ".nemo":
        return True
    try:
        with tarfile.open(path) as tar:
            return any(Path(n).name == "model_config.yaml" for n in tar.getnames())
    except (OSError, tarfile.TarError, EOFError):
        return False


def _espnet_checkpoint(folder: Path) -> Path | None:
    for name in _ESPNET_PREFERRED:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.pth"))
    return found[0] if found else None


def import_command(path: str | os.PathLike) -> str | None:
    """The ``slimasr import`` command that reads ``path``, when it is (or is a file of) a WeNet model folder, an
    espnet2 experiment folder or a NeMo ``.nemo`` archive; None when it looks like none of them.

    For ``exp/u2pp/final.pt`` beside ``exp/u2pp/train.yaml``: ``slimasr import wenet exp/u2pp --out model.pt``.
    """
    path = Path(path)
    out = "--out model.pt"
    if path.is_dir():
        if (path / "train.yaml").is_file():
            return f"slimasr import wenet {_q(path)} {out}"
        ckpt = _espnet_checkpoint(path) if (path / "config.yaml").is_file() else None
        if ckpt is not None:
            return f"slimasr import espnet --config {_q(path / 'config.yaml')} --checkpoint {_q(ckpt)} {out}"
        nemo = sorted(path.glob("*.nemo"))
        if len(nemo) == 1:
            return f"slimasr import nemo {_q(nemo[0])} {out}"
        return None
    if not path.is_file():
        return None
    folder = path.parent
    if (folder / "train.yaml").is_file():
        # another checkpoint (avg_10.pt) is named; WeNet's runtime final.zip (TorchScript) is no checkpoint
        extra = "" if path.name == "final.pt" or path.suffix != ".pt" else f" --checkpoint {_q(path)}"
        return f"slimasr import wenet {_q(folder)}{extra} {out}"
    if (folder / "config.yaml").is_file() and path.suffix == ".pth":
        return f"slimasr import espnet --config {_q(folder / 'config.yaml')} --checkpoint {_q(path)} {out}"
    if _is_nemo(path):
        return f"slimasr import nemo {_q(path)} {out}"
    return None


def import_hint(path: str | os.PathLike) -> str:
    """``"; <toolkit files>: import them first: <command>"`` for :func:`import_command`'s cases, else ``""``: a
    suffix for the error of a command that expected a slimasr model."""
    cmd = import_command(path)
    if cmd is None:
        return ""
    kind = cmd.split()[2]
    name = {"wenet": "a WeNet", "espnet": "an ESPnet", "nemo": "a NeMo"}[kind]
    return f"; it looks like {name} model: import it first with `{cmd}`"
