"""Video decoding: exact middle frames of one video as JPEGs (sampler, backends, window, render, worker).

Must not import Beam, torch or any other ``transforms`` module; ``gs://`` videos are read through the
blob store (``blobstore``).
"""
