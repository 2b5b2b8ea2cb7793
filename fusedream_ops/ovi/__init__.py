"""OVI (Dell'Erba & Bagdanov): an optimisation-based prior for Kandinsky 2.2."""
