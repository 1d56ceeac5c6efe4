"""Import Conformer CTC models trained by other toolkits (WeNet, ESPnet, NeMo) as ordinary slimasr models.

Each importer reads the toolkit's native files (never the toolkit itself), maps the weights onto
:class:`slimasr.model.ASRModel` with the layer variants of :class:`slimasr.model.ModelConfig`, keeps the source's
token order as the model's tokenizer, and records where the model came from in ``model.source``.
"""
from .detect import import_command, import_hint

__all__ = ["ImportFailed", "import_wenet", "import_espnet", "import_nemo", "import_command", "import_hint"]


def __getattr__(name: str):
    # ImportFailed lives with the torch-based importers; loaded on first use so that import_hint stays torch-free
    if name == "ImportFailed":
        from .common import ImportFailed

        return ImportFailed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def import_wenet(model_dir, checkpoint=None):
    """See :func:`slimasr.importers.wenet.import_wenet`."""
    from .wenet import import_wenet as f

    return f(model_dir, checkpoint)


def import_espnet(config, checkpoint, stats=None, bpe=None):
    """See :func:`slimasr.importers.espnet.import_espnet`."""
    from .espnet import import_espnet as f

    return f(config, checkpoint, stats, bpe)


def import_nemo(path):
    """See :func:`slimasr.importers.nemo.import_nemo`."""
    from .nemo import import_nemo as f

    return f(path)
