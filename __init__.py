"""ComfyUI-FuseDream: training-free, optimization-based text-to-image nodes (FuseDream, CLIPAG, OVI).

ComfyUI imports this file by path, so everything below is imported relatively.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web/js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
