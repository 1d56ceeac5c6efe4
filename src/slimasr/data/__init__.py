"""Training data: audio loading, manifests, features (torch), augmentation, datasets and the synthetic corpus.

Importing this package is cheap; the submodules import torch when they need it.

- :mod:`slimasr.data.audio`     ``load_audio`` (torch tensor, 16 kHz mono)
- :mod:`slimasr.data.manifest`  JSON-lines manifests and the Kaldi data-dir importer
- :mod:`slimasr.data.features`  ``compute_fbank`` (torchaudio, matches the torch-free runtime's features)
- :mod:`slimasr.data.cmvn`      global mean / inverse std of the features
- :mod:`slimasr.data.augment`   SpecAugment and speed perturbation
- :mod:`slimasr.data.dataset`   ``ASRDataset``, ``FeatureCache``, ``BucketBatchSampler``, ``collate``
- :mod:`slimasr.data.synth`     a speech corpus synthesised with espeak-ng and flite
"""
