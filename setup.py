from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="medtune",
    version="0.1.0",
    description="ZeRO-3 full-parameter instruction tuning of open LLMs on DeepSpeed, "
                "for biomedical NLP",
    long_description=Path("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["medtune", "medtune.*"]),
    # torch is pinned by the installer (CPU wheel here, CUDA build on clusters);
    # a bare requirement would pull a multi-GB CUDA build onto CPU machines.
    install_requires=[
        "torch>=2.4",
        "deepspeed>=0.17,<0.20",
        "transformers>=5.0,<6",
        "datasets>=3.0",
        "sentencepiece>=0.2",
        "tensorboard>=2.15",
        "safetensors>=0.4",
        "accelerate>=1.1",
        "huggingface_hub>=0.25",
        "pydantic>=2.7,<3",
        "PyYAML>=6.0",
        "tqdm>=4.66",
        "numpy",
        "matplotlib>=3.7",  # lengths.png of `medtune prepare` (Agg backend, no display needed)
        "psutil",
        "seqeval>=1.2",  # `medtune eval`: entity-level NER scores (strict IOB2)
    ],
    extras_require={
        "flash": ["flash-attn>=2.6"],
        "mpi": ["mpi4py>=3.1"],
        # logging.report_to trackers (medtune.engine.trackers); `make test` installs both
        "wandb": ["wandb>=0.19"],
        "mlflow": ["mlflow-skinny>=2.16"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3"],
    },
    entry_points={"console_scripts": ["medtune=medtune.cli:main"]},
)
