"""Transforms: the Beam transforms and plain functions that write a dataset version; decode/ samples frames.

May import Beam; must not import torch, ``pipeline`` or ``trainer``.
"""
