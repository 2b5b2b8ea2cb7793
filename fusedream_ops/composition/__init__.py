"""FuseDream-Composition (Sec. 3.3, Alg. 2): geometry, bi-level optimisation, blending."""
