"""Models: SASRec, the item encoders (ID, frozen features, video backbones) and VideoRec, which joins them.

Imports torch, torchvision (pytorchvideo, transformers lazily), numpy and ``trainer.config`` only: no data stream, no Beam.
"""
