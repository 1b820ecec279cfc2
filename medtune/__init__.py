"""medtune: ZeRO-3 full-parameter instruction tuning of open LLMs on DeepSpeed."""

__version__ = "0.1.0"
