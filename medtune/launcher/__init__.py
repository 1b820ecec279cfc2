"""Starting ranks: rank discovery, the local DeepSpeed runner, hostfiles and Slurm.

The launcher never imports the engine, torch or deepspeed at import time:
it builds a `LaunchPlan` with pure functions and runs it with `execute`.
"""
