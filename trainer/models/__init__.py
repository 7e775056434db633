"""Models: SASRec, the item encoders (ID, frozen features, video backbones) and VideoRec, which joins them.

Imports torch, numpy and ``trainer.config`` only: nothing of the data stream, no Beam.
"""
