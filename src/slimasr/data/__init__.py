"""Training data: manifests, augmentation, datasets and the synthetic corpus.

Importing this package is cheap; the submodules import torch when they need it. Audio loading and features
are not here: :mod:`slimasr.audio` and :mod:`slimasr.features` serve training, decoding and the runtime alike.

- :mod:`slimasr.data.manifest`  JSON-lines manifests and the Kaldi data-dir importer
- :mod:`slimasr.data.cmvn`      global mean / inverse std of the features
- :mod:`slimasr.data.augment`   SpecAugment and speed perturbation
- :mod:`slimasr.data.dataset`   ``ASRDataset``, ``FeatureCache``, ``BucketBatchSampler``, ``collate``
- :mod:`slimasr.data.synth`     a speech corpus synthesised with espeak-ng and flite
"""
