"""A synthetic world (coloured shapes with captions) where the papers' claims become measurable numbers:
a tiny CLIP and a tiny BigGAN-deep trained on it, and an independent judge that reads every image."""
