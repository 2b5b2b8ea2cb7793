"""Tiny Kandinsky 2.2 folders for the tests, written once per test process with the pack's fixture builders."""
import atexit
import functools
import os
import shutil
import tempfile

from fusedream_pack.fusedream_ops.fixtures import kandinsky as fixtures


@functools.lru_cache(maxsize=None)
def models_dir() -> str:
    """A ``models/`` tree holding ``kandinsky22/<tiny prior>`` and ``kandinsky22/<tiny decoder>``."""
    root = tempfile.mkdtemp(prefix="fusedream-kandinsky-")
    atexit.register(shutil.rmtree, root, True)
    fixtures.write(os.path.join(root, "models"))
    return os.path.join(root, "models")


def prior_folder() -> str:
    return os.path.join(models_dir(), "kandinsky22", fixtures.PRIOR_NAME)


def decoder_folder() -> str:
    return os.path.join(models_dir(), "kandinsky22", fixtures.DECODER_NAME)


@functools.lru_cache(maxsize=None)
def encoders():
    from fusedream_pack.fusedream_ops.models.kandinsky import load_encoders

    return load_encoders(prior_folder())


@functools.lru_cache(maxsize=None)
def decoder():
    from fusedream_pack.fusedream_ops.models.kandinsky import load_decoder

    return load_decoder(decoder_folder())
