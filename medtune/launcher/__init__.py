"""Starting ranks: one `LaunchPlan` shape for this machine, a hostfile's nodes and Slurm.

The launcher never imports the engine, torch or deepspeed at import time:
each backend builds a `LaunchPlan` with a pure function (`deepspeed.local_plan`,
`deepspeed.cluster_plan`, `slurm.plan`; `run` chooses the run directory and
port for each verb), `plan.execute` runs it and `plan.describe` is ``--dry-run``.
"""
