"""The reproduction scripts: argument handling, the CIFAR script's refusals, quick end-to-end runs.

The fast tests parse arguments and exercise the early exits; the end-to-end runs train real
(tiny) networks and are marked slow.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import cifar10_reproduction as cifar
from benchmarks import paper_reproduction as paper
from benchmarks import t1_recipe_sweep as sweep
from benchmarks.common import DIGITS_BASE, MNIST_BASE
from core.datasets import load_dataset
from core.spec import JobSpec


def test_paper_defaults_follow_the_issue():
    config = paper.make_config(paper.parse_args([]), "cmd")
    assert config.arch == "mnist-7conv" and config.dataset == "mnist-5k"
    assert config.timesteps == [1, 2, 4, 8]
    assert config.cq_options(1, "vr").clamp_max == 0.25
    assert config.cq_options(4, "vr").clamp_max == 0.8
    assert config.cq_options(4, "vr").encoding == "vr"


def test_paper_quick_and_overrides():
    args = paper.parse_args(["--quick", "--epochs", "3", "--seed", "7", "--timesteps", "1",
                             "--ablation-timesteps"])
    config = paper.make_config(args, "cmd")
    assert config.dataset == "digits" and config.arch == "mlp-digits"
    assert (config.base_epochs, config.seed, config.timesteps) == (3, 7, [1])
    assert config.ablation_timesteps == []
    plain_quick = paper.make_config(paper.parse_args(["--quick"]), "cmd")
    assert config.recipe().key() != plain_quick.recipe().key()  # cached weights never mix


def test_paper_plan_ablates_the_straight_through_window_the_run_did_not_use():
    config = paper.make_config(paper.parse_args([]), "cmd")
    steps = paper.plan(config)
    # defaults: k = 1 at T = 1 and the paper's k = 0 at T = 2, so the ablation flips each
    assert [(s.window, s.surrogate_margin) for s in steps if s.surrogate_margin is not None] \
        == [(1, 0.0), (2, 1.0)]
    assert {(s.window, s.encoding) for s in steps} >= {(t, "vr") for t in (1, 2, 4, 8)}
    paper_window = paper.make_config(paper.parse_args(["--surrogate-margin", "0"]), "cmd")
    assert [s.surrogate_margin for s in paper.plan(paper_window)
            if s.surrogate_margin is not None] == [1.0, 1.0]


def test_paper_script_trains_the_shared_base_recipes_unless_overridden():
    for argv, recipe in (([], MNIST_BASE), (["--quick"], DIGITS_BASE)):
        assert paper.make_config(paper.parse_args(argv), "cmd").recipe() == recipe
    assert paper.make_config(paper.parse_args(["--epochs", "2"]), "cmd").recipe() != MNIST_BASE


def test_sweep_grid_pairs_every_budget_with_its_relu_twin():
    trials = sweep.trials(sweep.parse_args(["--epochs", "2", "5", "--margins", "0", "1",
                                            "--seeds", "0", "1"]))
    assert len(trials) == 2 * 2 * 3  # seeds × epochs × (twin + two margins)
    twins = [t for t in trials if t.margin is None]
    assert sorted((t.seed, t.epochs) for t in twins) == [(0, 2), (0, 5), (1, 2), (1, 5)]


def test_paper_main_jobs_run_qcfs_with_the_chosen_preset():
    for argv, preset in (([], "thorough"), (["--quick"], "fast"),
                         (["--quick", "--qcfs-preset", "thorough"], "thorough")):
        config = paper.make_config(paper.parse_args(argv), "cmd")
        assert config.qcfs_options().preset == preset
    config = paper.make_config(paper.parse_args([]), "cmd")
    main = [s for s in paper.plan(config) if "qcfs" in s.methods]
    assert [s.window for s in main] == config.timesteps
    assert main[0].methods == paper.PAPER_METHODS + ("qcfs",) + paper.CLASSIC_METHODS


def test_paper_cells_show_latency_and_spikes_or_a_dash():
    assert paper._cell(0.976, 2, 1234.4) == "97.60 (2, 1,234)"
    assert paper._cell(0.5, 14, None) == "50.00 (14, –)"
    asg, binary_if = (SimpleNamespace(latency=SimpleNamespace(anytime=anytime))
                      for anytime in (False, True))
    assert paper.neuron_class(asg) != paper.neuron_class(binary_if) == paper.IF_CLASS


def test_paper_peers_say_why_when_spikingjelly_does_not_import(monkeypatch):
    from benchmarks import peer_recipes

    def missing():
        raise ImportError("No module named 'spikingjelly'")

    monkeypatch.setattr(peer_recipes, "version", missing)
    config = paper.make_config(paper.parse_args(["--quick"]), "cmd")
    dataset = load_dataset(config.dataset, None)
    spec = JobSpec(model_path="unused.safetensors", arch=config.arch, dataset=config.dataset)
    report = SimpleNamespace(dataset=SimpleNamespace(calib_samples=spec.calib_samples,
                                                     eval_samples=len(dataset.test)))
    peers = paper.run_peers(config, None, dataset, spec, report)
    assert peers.runs == [] and "not importable" in peers.error
    assert paper.best_peer(peers, 1) is None
    assert "not run" in paper._peers_setup(peers)[0]


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--timesteps", "0"],
                                  ["--finetune-epochs", "-1"]])
def test_paper_rejects_nonsense(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        paper.parse_args(argv)
    assert exit_info.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_cifar_without_data_dir_says_what_to_put_where(capsys):
    assert cifar.main([]) == cifar.EXIT_NO_DATA
    captured = capsys.readouterr()
    assert "93.71" in captured.out
    assert "cifar-10-batches-bin/" in captured.err and "data_batch_1.bin" in captured.err


def test_cifar_with_empty_data_dir_names_the_missing_files(tmp_path, capsys):
    assert cifar.main(["--data-dir", str(tmp_path)]) == cifar.EXIT_NO_DATA
    err = capsys.readouterr().err
    assert str(tmp_path / "cifar-10-batches-bin") in err
    assert "test_batch.bin" in err and "data_batch_5" in err


def _fake_cifar(root, per_file: int) -> None:
    """CIFAR-10 binary files of random records (label byte + 3,072 pixel bytes)."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (per_file, 1 + 3072), dtype=np.uint8)
        records[:, 0] %= 10
        records.tofile(folder / name)


def test_cifar_without_gpu_refuses_unless_allowed(tmp_path, capsys, monkeypatch):
    _fake_cifar(tmp_path, per_file=2)
    monkeypatch.setattr(cifar.torch.cuda, "is_available", lambda: False)
    assert cifar.main(["--data-dir", str(tmp_path)]) == cifar.EXIT_NO_GPU
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_paper_quick_run_writes_the_report(tmp_path):
    out = tmp_path / "docs" / "paper.md"
    assert paper.main(["--quick", "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    text = out.read_text()
    for needle in ("| `cq-asg` |", "| `half-threshold` |", "## Verdict per T", "T = 2",
                   "98.73", "| 1 | vr-ice |", "python -m benchmarks.paper_reproduction --quick",
                   "| 1 | vr | [0, m] (paper) |", "| 1 | vr | [−1/L, m + 1/L] |",
                   "| `qcfs` | binary IF", "| SpikingJelly `ltb` |", "QCFS ANN",
                   "preset `fast`", "T = 2: ≥ 97.5 %: **", "beats both: **"):
        assert needle in text
    main = [line for line in text.splitlines() if line.startswith("| `qcfs` |")][0]
    assert main.count("(1, ") == 1 and main.count("(2, ") == 1  # latency T in each cell
    assert (tmp_path / "docs" / "paper.svg").read_text().startswith("<?xml")
    assert len(list((tmp_path / "c").glob("*.safetensors"))) == 1


@pytest.mark.slow
def test_sweep_quick_run_writes_one_row_per_recipe(tmp_path):
    out = tmp_path / "sweep.md"
    argv = ["--quick", "--epochs", "1", "--margins", "0", "1", "--seeds", "0", "--out",
            str(out), "--cache-dir", str(tmp_path / "c")]
    assert sweep.main(argv) == 0
    text = out.read_text()
    for needle in ("| 1 | on | 0.001 | ReLU twin |", "| 1 | on | 0.001 | cq-asg, k = 0 |",
                   "| 1 | on | 0.001 | cq-asg, k = 1 |", "mlp-digits on digits"):
        assert needle in text
    scores = [float(line.split("|")[5]) for line in text.splitlines() if "| on |" in line]
    assert len(scores) == 3 and all(10 < score <= 100 for score in scores)


@pytest.mark.slow
def test_cifar_runs_on_cpu_when_allowed(tmp_path, capsys):
    _fake_cifar(tmp_path, per_file=4)
    out = tmp_path / "cifar.md"
    argv = ["--data-dir", str(tmp_path), "--allow-cpu", "--epochs", "1", "--finetune-epochs",
            "1", "--eval-samples", "4", "--batch-size", "8", "--out", str(out),
            "--cache-dir", str(tmp_path / "c")]
    assert cifar.main(argv) == 0
    text = out.read_text()
    assert "93.71" in text and "| `cq-asg` |" in text and "| `cq-ctt` |" in text
    assert "cq-if: " in capsys.readouterr().out


def test_the_t1_verdict_compares_the_default_recipe_with_the_best_peer():
    from benchmarks.bench_peers import DEFAULT_T1_RECIPE, PeerResult, t1_verdict

    ours = PeerResult(name=DEFAULT_T1_RECIPE, library="snnconv", top1=[0.95])
    peers = [PeerResult(name="SpikingJelly ltb", library="SpikingJelly", top1=[0.96, 0.97]),
             PeerResult(name="sinabs", library="sinabs", top1=[0.2])]
    assert "**no** (95.0 % against SpikingJelly ltb 96.0 %)" in t1_verdict([ours, *peers])
    ours.top1 = [0.961]
    assert "**yes**" in t1_verdict([ours, *peers])
    assert t1_verdict(peers) is None
