"""One validation layer shared by every node and the command line, run before any work starts.

The check of a node's arguments against its own ``INPUT_TYPES`` is ComfyUI-format knowledge and lives in
``nodes/node_inputs.py``; it calls these.

- :mod:`.numbers`: finite, in-range numbers (``nan`` or a negative value is an error naming the input and its range,
  never silently "off").
- :mod:`.images`: image and mask batches (empty, too small, mismatched, NaN pixels).
- :mod:`.prompts`: the prompt weight syntax and the 77-token limit.
- :mod:`.finite`: non-finite tensors, and which model weight holds them.
"""
