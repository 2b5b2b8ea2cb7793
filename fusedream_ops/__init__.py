"""fusedream_ops: FuseDream, CLIPAG and OVI as plain PyTorch functions (no ComfyUI import).

A script uses it like this::

    from fusedream_ops.models.biggan import load_biggan
    from fusedream_ops.models.clip import load_clip
    from fusedream_ops.fusedream.pipeline import FuseDreamSettings, generate

    result = generate(load_biggan("models/biggan/biggan-deep-256"),
                      load_clip("auto", "models/open_clip/ViT-B-32.safetensors"),
                      "a photo of a blue dog", FuseDreamSettings(seed=1))
    result.image  # [1,3,H,W] in 0..1
"""
