"""The bad-input matrix (issue: reliability audit): each case runs the real CLI in a subprocess.

Every case must end with exit code 2, exactly one stderr line naming the problem, and no
traceback (docs/architecture.md, "Errors"). One tiny checkpoint is shared by all cases, and
the cases run concurrently (one subprocess per core) in a module fixture; each case is then
its own test, so a failure names the case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES: list[tuple[str, list[str], str]] = [
    # sample: numbers and devices
    ("cfg-nan", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--cfg", "nan"], "finite"),
    ("cfg-inf", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--cfg", "inf"], "finite"),
    ("cfg-negative", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--cfg", "-1"], "finite number in [0, 100]"),
    ("cfg-text", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--cfg", "big"], "not a number"),
    ("num-zero", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--num", "0"], "integer >= 1"),
    ("num-text", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--num", "many"], "not an integer"),
    ("steps-zero", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--steps", "0"], "integer >= 1"),
    ("frames-zero", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--frames", "0"], "integer >= 1"),
    ("device-cuda", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--device", "cuda"], "no CUDA device"),
    ("device-bogus", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--device", "tpu"], "not a device"),
    ("prompt-tokens", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--max-prompt-tokens", "0"], "integer >= 1"),
    # sample: paths
    ("out-dir", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--out", "{tmp}"], "is a directory"),
    ("out-suffix", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--out", "{tmp}/g.txt"], "suffix"),
    ("out-under-file", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--out", "{file}/g.png"], "is a file"),
    ("ckpt-missing", ["sample", "--checkpoint", "{tmp}/nope", "--class-label", "0", "--out", "{tmp}/g.png"], "does not exist"),
    ("ckpt-is-file", ["sample", "--checkpoint", "{file}", "--class-label", "0", "--out", "{tmp}/g.png"], "is a file, not a directory"),
    ("ckpt-corrupt", ["sample", "--checkpoint", "{corrupt}", "--class-label", "0", "--out", "{tmp}/g.png"], "corrupt"),
    ("ckpt-yaml-tag", ["sample", "--checkpoint", "{tagged}", "--class-label", "0", "--out", "{tmp}/g.png"], "config"),
    # sample: requests
    ("label-range", ["sample", "--checkpoint", "{c2i}", "--class-label", "9", "--out", "{tmp}/g.png"], "out of range"),
    ("label-text", ["sample", "--checkpoint", "{c2i}", "--class-label", "x", "--out", "{tmp}/g.png"], "comma-separated"),
    ("no-condition", ["sample", "--checkpoint", "{c2i}", "--out", "{tmp}/g.png"], "exactly one of"),
    ("both-conditions", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--prompt", "a", "--out", "{tmp}/g.png"], "exactly one of"),
    ("prompt-on-c2i", ["sample", "--checkpoint", "{c2i}", "--prompt", "a red circle", "--out", "{tmp}/g.png"], "no text vocabulary"),
    ("sampler", ["sample", "--checkpoint", "{c2i}", "--class-label", "0", "--sampler", "dpm+", "--out", "{tmp}/g.png"], "sampler"),
    ("tokenizer-missing", ["sample", "--checkpoint", "{t2i_notok}", "--prompt", "a red circle", "--out", "{tmp}/g.png"], "no tokenizer/ folder"),
    ("prompt-too-long", ["sample", "--checkpoint", "{t2i}", "--prompt", "red " * 400, "--out", "{tmp}/g.png"], "--max-prompt-tokens"),
    ("prompt-empty", ["sample", "--checkpoint", "{t2i}", "--prompt", "  ", "--out", "{tmp}/g.png"], "empty"),
    # tokenizer and data
    ("vocab-zero", ["tokenizer", "train", "--data", "{text}", "--vocab-size", "0", "--out", "{tmp}/tok"], "integer >= 1"),
    ("text-missing", ["tokenizer", "train", "--data", "{tmp}/missing.txt", "--out", "{tmp}/tok"], "text file does not exist"),
    ("text-is-dir", ["tokenizer", "train", "--data", "{tmp}", "--out", "{tmp}/tok"], "is a directory"),
    ("dataset-unknown", ["tokenizer", "train", "--data", "easyvq", "--out", "{tmp}/tok"], "easyvq"),
    ("data-info-unknown", ["data", "info", "fashion_mnis"], "fashion_mnis"),
    ("data-action", ["data", "delete"], "invalid choice"),
    # convert
    ("convert-random", ["convert", "acdit", "--input", "{random}", "--output", "{tmp}/conv"], "not a torch.save file"),
    ("convert-missing", ["convert", "acdit", "--input", "{tmp}/none.pt", "--output", "{tmp}/conv"], "does not exist"),
    ("convert-dir", ["convert", "acdit", "--input", "{tmp}", "--output", "{tmp}/conv"], "is a directory, not a file"),
    # quickstart, info, top level
    ("qs-minutes-zero", ["quickstart", "--minutes", "0", "--out", "{tmp}/qs"], "finite number in (0"),
    ("qs-minutes-nan", ["quickstart", "--minutes", "nan", "--out", "{tmp}/qs"], "finite"),
    ("qs-steps", ["quickstart", "--steps", "-3", "--out", "{tmp}/qs"], "integer >= 1"),
    ("qs-eval-limit", ["quickstart", "--eval-limit", "0", "--out", "{tmp}/qs"], "integer >= 1"),
    ("info-preset", ["info", "--preset", "gigantic"], "invalid choice"),
    ("command", ["trian"], "invalid choice"),
    # train (config checks run before anything is written)
    ("train-config-missing", ["train", "--config", "{tmp}/none.yaml"], "none.yaml"),
    ("train-unknown-key", ["train", "--config", "{train_cfg}", "stpes=2", "out_dir={tmp}/run"], "stpes"),
    ("train-lr-nan", ["train", "--config", "{train_cfg}", "lr=.nan", "out_dir={tmp}/run"], "lr"),
    ("train-steps-zero", ["train", "--config", "{train_cfg}", "steps=0", "out_dir={tmp}/run"], "steps"),
    # eval: arguments, confined task files, the output checked before any work
    ("eval-limit-zero", ["eval", "--checkpoint", "{c2i}", "--tasks", "fmnist_c2i", "--limit", "0"], "integer >= 1"),
    ("eval-seed-negative", ["eval", "--checkpoint", "{c2i}", "--tasks", "fmnist_c2i", "--seed", "-1"], "integer >= 0"),
    ("eval-device", ["eval", "--checkpoint", "{c2i}", "--tasks", "fmnist_c2i", "--device", "cuda"], "no CUDA device"),
    ("eval-unknown-task", ["eval", "--checkpoint", "{c2i}", "--tasks", "fmnist_c2", "--output", "{tmp}/results.json"], "fmnist_c2i"),
    ("eval-env-leak", ["eval", "--checkpoint", "{c2i}", "--tasks", "leak", "--include-path", "{evaltasks}", "--output", "{tmp}/results.json"],
     "does not declare"),
    ("eval-include-escape", ["eval", "--checkpoint", "{c2i}", "--tasks", "escape", "--include-path", "{evaltasks}",
                             "--output", "{tmp}/results.json"], "outside the task search path"),
    ("eval-output-dir", ["eval", "--checkpoint", "{c2i}", "--tasks", "fmnist_c2i", "--output", "{tmp}"], "is a directory"),
    ("eval-bad-probe", ["eval", "--checkpoint", "{c2i}", "--tasks", "fmnist_c2i,badprobe", "--include-path", "{evaltasks}",
                        "--output", "{tmp}/results.json"], "probe.pool"),
]
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
       "SECRET_TOKEN": "s3cr3t"}


def _build(tmp: Path) -> dict[str, str]:
    from unimodal.checkpoint import save_checkpoint
    from unimodal.config import VisualConfig
    from unimodal.model import create_model
    from unimodal.tokenizers import TextTokenizer

    v = VisualConfig(channels=1, image_size=8, patch_size=2, block_h=2, block_w=2)
    c2i = save_checkpoint(tmp / "c2i", create_model("tiny", token_dim=v.token_dim, vocab_size=0, num_classes=3), visual=v)
    tok = TextTokenizer.train(["a red circle", "a blue square", "a green triangle"] * 20, vocab_size=300, out_dir=tmp / "tok")
    t2i_model = create_model("tiny", token_dim=v.token_dim, vocab_size=tok.vocab_size)
    t2i = save_checkpoint(tmp / "t2i", t2i_model, visual=v, tokenizer_dir=tmp / "tok")
    notok = save_checkpoint(tmp / "t2i_notok", t2i_model, visual=v)
    corrupt = save_checkpoint(tmp / "corrupt", create_model("tiny", token_dim=v.token_dim, vocab_size=0, num_classes=3), visual=v)
    weights = Path(corrupt) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    tagged = save_checkpoint(tmp / "tagged", create_model("tiny", token_dim=v.token_dim, vocab_size=0, num_classes=3), visual=v)
    (Path(tagged) / "config.yaml").write_text("model: !!python/object/apply:os.system ['true']\n")
    (tmp / "file.txt").write_text("a plain file\n")
    (tmp / "random.pt").write_bytes(os.urandom(4096))
    (tmp / "corpus.txt").write_text("a red circle\n" * 50)
    tasks = tmp / "evaltasks"
    tasks.mkdir()
    (tasks / "leak.yaml").write_text("name: leak\ninclude: fmnist_c2i\ndescription: 'token ${SECRET_TOKEN}'\n")
    (tasks / "escape.yaml").write_text("name: escape\ninclude: '../outside.yaml'\n")
    (tmp / "outside.yaml").write_text("name: outside\nhead: vqa\ndataset: easyvqa\nmetrics: [exact_match]\n")
    (tasks / "badprobe.yaml").write_text("name: badprobe\ninclude: fmnist_probe\nprobe: {pool: max}\n")
    return {"c2i": str(c2i), "t2i": str(t2i), "t2i_notok": str(notok), "corrupt": str(corrupt), "tagged": str(tagged),
            "file": str(tmp / "file.txt"), "random": str(tmp / "random.pt"), "text": str(tmp / "corpus.txt"),
            "train_cfg": str(ROOT / "configs/train/easyvqa_tiny.yaml"), "evaltasks": str(tasks)}


def _hashes(root: Path) -> dict[str, int]:
    return {str(p): hash(p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def _run(shared: dict[str, str], work: Path, argv: list[str]) -> subprocess.CompletedProcess:
    work.mkdir()
    args = [a.format(**shared, tmp=str(work)) for a in argv]
    env = {**os.environ, **ENV}
    env.pop("RANK", None)
    return subprocess.run([sys.executable, "-m", "unimodal.cli", *args], capture_output=True, text=True, env=env, cwd=work, timeout=300)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path, bool]]:
    """Every case's process and work directory, and whether the shared inputs stayed byte-identical."""
    shared_root = tmp_path_factory.mktemp("reliability")
    shared = _build(shared_root)
    work = tmp_path_factory.mktemp("cases")
    before = _hashes(shared_root)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {name: (pool.submit(_run, shared, work / name, argv), work / name) for name, argv, _ in CASES}
        done = {name: (f.result(), d) for name, (f, d) in futures.items()}
    untouched = _hashes(shared_root) == before
    return {name: (proc, d, untouched) for name, (proc, d) in done.items()}


@pytest.mark.parametrize("name, expect", [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(matrix, name: str, expect: str) -> None:
    proc, work, untouched = matrix[name]
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line and not line.startswith("  ")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr
    assert expect in lines[0], lines[0]
    assert "s3cr3t" not in proc.stderr + proc.stdout  # an undeclared variable is never expanded, not even into the error
    assert untouched  # no case touched a shared input (checkpoints, tokenizer, task files)
    assert not any(p.name in ("run", "qs", "tok", "conv", "results.json", "results.md") for p in work.iterdir())  # nothing was created


def test_the_matrix_is_large_enough() -> None:
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
