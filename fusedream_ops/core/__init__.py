"""Shared plumbing: checkpoints, precision, progress, image layout, errors, autograd helpers."""
