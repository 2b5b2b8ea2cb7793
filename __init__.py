"""ComfyUI-FuseDream: training-free, optimization-based text-to-image nodes (FuseDream, CLIPAG, OVI).

ComfyUI imports this file by path as a package (``custom_nodes/<folder>``), so everything below is imported
relatively. pytest, collecting a checkout whose folder name is not an identifier (``ComfyUI-FuseDream``, the name
users clone into), imports it once more as a plain module with no package: then there is nothing to register, and
the tests import the pack by path themselves (``tests/conftest.py``).
"""
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./web/js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
