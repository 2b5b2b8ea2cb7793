"""A diffusers scheduler config checked before a scheduler is built from it.

A scheduler allocates its noise tables at construction: ``num_train_timesteps`` of 3e8 takes gigabytes, 1e12 a raw
torch error. Every number a Kandinsky scheduler reads is checked here (finite, in a range that covers every released
config with a wide margin), and every failure names the file and the field.
"""
from __future__ import annotations

from ..core.errors import require
from ..validation.numbers import require_number

MAX_TRAIN_TIMESTEPS = 10_000
"""Released diffusion models train with 1000 timesteps; ten times that is plenty and keeps the tables small."""
NUMBER_FIELDS = {  # field: (low, high, integer)
    "beta_start": (0.0, 1.0, False),
    "beta_end": (0.0, 1.0, False),
    "clip_sample_range": (0.0, 1e4, False),
    "sample_max_value": (0.0, 1e4, False),
    "dynamic_thresholding_ratio": (0.0, 1.0, False),
    "steps_offset": (0, MAX_TRAIN_TIMESTEPS, True),
}
TEXT_FIELDS = ("beta_schedule", "prediction_type", "variance_type", "timestep_spacing", "_class_name",
               "_diffusers_version")


def require_scheduler_config(config: dict, source: str) -> dict:
    """A copy of ``config`` (whole-number fields as integers: diffusers does integer arithmetic on them) when its sizes
    and numbers are sane, else a :class:`FuseDreamError` naming ``source`` (the file) and the field."""
    config = dict(config)
    timesteps = config["num_train_timesteps"] = require_number(
        f"{source}: num_train_timesteps", config.get("num_train_timesteps", 1000), 1, MAX_TRAIN_TIMESTEPS, integer=True)
    for field, (low, high, integer) in NUMBER_FIELDS.items():
        if config.get(field) is not None:
            config[field] = require_number(f"{source}: {field}", config[field], low, high, integer=integer)
    for field in TEXT_FIELDS:
        value = config.get(field)
        require(value is None or (isinstance(value, str) and len(value) <= 64),
                f"{source}: {field} must be a short name, got {str(value)[:40]!r}.")
    betas = config.get("trained_betas")
    if betas is not None:
        require(isinstance(betas, list) and len(betas) == timesteps,
                f"{source}: trained_betas must list one number per training timestep (num_train_timesteps = "
                f"{timesteps}), got {len(betas) if isinstance(betas, list) else type(betas).__name__}.")
        for i, beta in enumerate(betas):
            require_number(f"{source}: trained_betas[{i}]", beta, 0.0, 1.0)
    return config
