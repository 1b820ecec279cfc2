"""medtune: ZeRO-3 full-parameter instruction tuning of open LLMs on DeepSpeed."""

__version__ = "0.1.0"

# The data and models parts register their recipe checks with medtune.config (which
# imports no reader and no family): importing any medtune module runs this first, so
# they are always there.
import medtune.data.checks  # noqa: E402,F401
import medtune.models.checks  # noqa: E402,F401
import medtune.engine.trackers  # noqa: E402,F401  (logging.report_to's client check)
