"""CLIPAG (Ganz & Elad 2023): generator-free synthesis and adversarial fine-tuning."""
