"""FuseDream (Liu et al. 2021): AugCLIP, top-k initialisation, basis optimisation."""
