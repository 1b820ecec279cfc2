"""Compute kernels: attention backends for packed rows and the loss head.

Kernels know nothing of recipes: they take tensors and plain arguments.
"""
