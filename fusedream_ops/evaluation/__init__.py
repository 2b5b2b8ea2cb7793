"""Evaluation of batch runs with the FuseDream paper's protocol (Table 1): IS, FID, CLIP R-precision (not DAMSM's).

``python -m fusedream_ops.evaluation RUN ...`` or :func:`evaluate_runs`. torchmetrics (and torch-fidelity for the
Inception network) are the ``eval`` extra, imported only when metrics are computed.
"""
from .report import EvaluationSettings, evaluate_runs, format_table

__all__ = ["EvaluationSettings", "evaluate_runs", "format_table"]
