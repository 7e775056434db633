"""Trainer: VideoRec training, evaluation and feature extraction on streamed dataset versions (PyTorch).

Must not import Beam, ``pipeline`` or ``transforms`` but ``transforms.format``: it reads datasets only as files.
"""
