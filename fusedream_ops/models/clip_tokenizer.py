"""The CLIP BPE tokenizer (49408 tokens) from the vocabulary open_clip ships, as a transformers ``CLIPTokenizer``.

Used when the prior's encoders come as single files without a ``tokenizer/`` folder (and by the test fixtures). The
token ids equal open_clip's and those of the Kandinsky 2.2 / SDXL bigG tokenizers for the same text.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_clip_tokenizer(folder: str) -> list[str]:
    """``vocab.json`` + ``merges.txt`` + configs of the CLIP BPE tokenizer (49408 tokens) from open_clip's vocabulary."""
    import open_clip.tokenizer as oct

    with gzip.open(oct.default_bpe(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(folder, exist_ok=True)
    files = {
        "vocab.json": json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "tokenizer_config.json": json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
                                             "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                             "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
        "special_tokens_map.json": json.dumps({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                               "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
    }
    paths = []
    for name, text in files.items():
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        paths.append(path)
    return paths


def bundled_clip_tokenizer():
    """A ``CLIPTokenizer`` (model_max_length 77) built from open_clip's vocabulary, without any download."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="fusedream-bpe-") as folder:
        write_clip_tokenizer(folder)
        return CLIPTokenizer.from_pretrained(folder, model_max_length=77, local_files_only=True)
