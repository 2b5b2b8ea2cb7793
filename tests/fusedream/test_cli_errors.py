"""python -m fusedream_ops: every bad argument is a one-line [FuseDream] message (exit 2) before any work."""
import os

import pytest
import torch

from fusedream_pack.fusedream_ops.fusedream.cli import RANGES, main
from fusedream_pack.nodes import NODE_CLASS_MAPPINGS


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv,message", [
    (["--steps", "-1"], "--steps must be an integer from 1 to 100000, got -1"),
    (["--lr", "nan"], "--lr must be a finite number from 1e-06 to 1, got nan"),
    (["--k", "0"], "--k must be an integer from 1 to 1000, got 0"),
    (["--candidates", "3", "--k", "5"], r"--k \(5\) must be at most --candidates \(3\)"),
    (["--copies", "0"], "--copies must be an integer from 1 to 512"),
    (["--device", "warp-drive"], "--device 'warp-drive' is not a torch device"),
])
def test_bad_numbers_and_devices_are_refused_before_any_model_is_loaded(capsys, tmp_path, argv, message):
    code, out, err = run(capsys, "a dog", "--models", str(tmp_path / "nothing-here"), *argv)
    assert code == 2 and out == "" and err.startswith("[FuseDream]") and "Traceback" not in err
    assert __import__("re").search(message, err), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_a_message_not_a_traceback(capsys, tmp_path):
    code, _, err = run(capsys, "a dog", "--models", str(tmp_path), "--device", "cuda")
    assert code == 2 and "torch sees no CUDA GPU here; use --device cpu" in err


def test_an_existing_folder_as_output_is_named_not_a_temporary_file(capsys, tmp_path):
    code, _, err = run(capsys, "a dog", "--models", str(tmp_path), "-o", str(tmp_path))
    assert code == 2 and f"-o {tmp_path} is an existing folder" in err and ".tmp" not in err
    code, _, err = run(capsys, "a dog", "--models", str(tmp_path), "-o", str(tmp_path / "no" / "x.png"))
    assert code == 2 and "does not exist; create it first" in err


def test_a_missing_model_says_where_models_go_and_names_the_models_option(capsys, tmp_path):
    code, _, err = run(capsys, "a dog", "--models", str(tmp_path), "-o", str(tmp_path / "x.png"))
    assert code == 2 and "--biggan 'biggan-deep-256' was not found" in err
    assert os.path.join(str(tmp_path), "biggan", "biggan-deep-256") in err and "--models" in err and "README" in err


def test_an_ambiguous_prompt_is_refused_with_the_fix(capsys, tmp_path):
    code, _, err = run(capsys, "time 10:30|blurry:-0.5", "--models", str(tmp_path))
    assert code == 2 and "'time 10:30 :1' keeps 'time 10:30' as the text" in err


def test_progress_counts_candidates_and_long_prompts_are_reported(capsys, tiny_models, tmp_path):
    code, out, err = run(capsys, "a dog " * 60, "--models", tiny_models, "--candidates", "25", "--k", "2",
                         "--steps", "1", "--copies", "1", "-o", str(tmp_path / "dog.png"))
    assert code == 0 and os.path.isfile(tmp_path / "dog.png")
    assert "top-k 25/25 candidates" in out and "top-k 3/" not in out
    assert "prompt 1" in err and "122 tokens long; CLIP reads only the first 77" in err


def test_the_command_lines_ranges_are_the_nodes_ranges():
    declared = {
        "candidates": NODE_CLASS_MAPPINGS["FuseDreamLatentSampler"].INPUT_TYPES()["required"]["candidates"],
        "k": NODE_CLASS_MAPPINGS["FuseDreamTopK"].INPUT_TYPES()["required"]["k"],
        "steps": NODE_CLASS_MAPPINGS["FuseDreamBasisOptimizer"].INPUT_TYPES()["required"]["steps"],
        "lr": NODE_CLASS_MAPPINGS["FuseDreamBasisOptimizer"].INPUT_TYPES()["required"]["lr"],
        "copies": NODE_CLASS_MAPPINGS["FuseDreamAugCLIPObjective"].INPUT_TYPES()["required"]["copies"],
        "seed": NODE_CLASS_MAPPINGS["FuseDreamBasisOptimizer"].INPUT_TYPES()["required"]["seed"],
    }
    assert RANGES == {name: (spec[1]["min"], spec[1]["max"]) for name, spec in declared.items()}
