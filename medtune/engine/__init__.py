"""What every rank runs: model under ZeRO-3, the training loop, checkpoints, export.

The engine never parses command lines (``medtune.cli`` does) and never
launches processes (``medtune.launcher`` does).
"""
