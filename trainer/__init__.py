"""Trainer: VideoRec training, evaluation and feature extraction on streamed dataset versions (PyTorch).

Must not import Beam, ``pipeline`` or ``transforms`` (it reads datasets only as files, through ``dataformat``).
"""
