"""One validation layer shared by every node and the command line, run before any work starts.

The check of a node's arguments against its own ``INPUT_TYPES`` is ComfyUI-format knowledge and lives in
``nodes/node_inputs.py``; it calls these.

- :mod:`.numbers`: finite, in-range numbers (``nan`` or a negative value is an error naming the input and its range,
  never silently "off").
- :mod:`.node_inputs`: checks a node's arguments against the ranges its own ``INPUT_TYPES`` declares (so the UI and
  the checks cannot drift) and its outputs for non-finite values.
- :mod:`.images`: ComfyUI IMAGE / MASK batches (empty, too small, mismatched, NaN pixels).
- :mod:`.prompts`: the prompt weight syntax, the 77-token limit and the bound on a prompt's length.
- :mod:`.names`: text inputs bounded, single-line ones and names free of control characters, plain file names.
- :mod:`.finite`: non-finite tensors, and which model weight holds them.
"""
