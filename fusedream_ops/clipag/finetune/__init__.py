"""CLIPAG adversarial fine-tuning: make an open_clip image encoder robust so its input gradients become
perceptually aligned (Ganz & Elad 2023). The authors released no training code; this follows the paper's recipe.

For every batch of image-caption pairs: PGD in pixel space ([0, 1] units) finds δ with ‖δ‖₂ ≤ ε (1.5) that
maximises CLIP's image-text contrastive loss, then AdamW (lr 2e-5, weight decay 1e-4, gradients accumulated over
10 batches) updates the IMAGE encoder only to minimise that loss on the adversarial images. The text encoder and
the logit scale stay frozen.

    python -m fusedream_ops.clipag.finetune --data pairs/ --checkpoint ViT-B-32.safetensors --out runs/clipag
    torchrun --nproc_per_node 4 -m fusedream_ops.clipag.finetune ...   # several GPUs, DistributedDataParallel

Data: a folder of images each with a same-stem ``.txt`` caption, or a CSV (``--csv-img-key``/``--csv-caption-key``,
paths relative to the CSV). A seeded share of the pairs is held out for the sanity metric: image→caption top-1
retrieval among the held-out captions, clean and under the same PGD attack. Every ``--save-every`` steps the
fine-tuned model is written as ``<out>/clipag-stepNNNNNN.safetensors`` with its open_clip config beside it (the
pack's CLIP loader reads it with architecture ``auto``), together with ``<out>/resume.pt``; running the same
command again continues from there.
"""
