"""The command line: presets, --config, options and overrides in any order, on every config command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pgolf.core.accounting
import pgolf.core.train
import pgolf.data.build
import pgolf.running.bench
import pgolf.running.cli
import pgolf.running.launch
import pgolf.running.sizing
from pgolf.core.config import ENV_KEYS, ENV_SPECIAL, Config
from pgolf.core.model import build_model
from pgolf.running.cli import main
from pgolf.running.presets import PRESETS, describe, get_preset


@pytest.fixture(autouse=True)
def _no_official_env(monkeypatch):
    """The official environment names are config input; none may leak in from the shell running the tests."""
    for name in (*ENV_KEYS, *ENV_SPECIAL, "RUN_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_file(tmp_path) -> Path:
    p = tmp_path / "start.json"
    p.write_text(get_preset("tiny").replace({"train.seed": 5}).to_json())
    return p


class Captured(Exception):
    pass


@pytest.fixture
def capture(monkeypatch):
    """Replace a command's library call with one that records its arguments and stops the command."""
    seen: dict = {}

    def install(module, name, cfg_arg=0):
        def fake(*a, **kw):
            seen["cfg"], seen["args"] = a[cfg_arg], a
            raise Captured

        monkeypatch.setattr(module, name, fake)
        return seen
    return install


def _config(argv, capsys) -> Config:
    assert main(["config", *argv]) == 0
    return Config.from_dict(json.loads(capsys.readouterr().out))


@pytest.mark.parametrize("order", [
    ["--config", "{f}", "model.num_layers=2", "train.iterations=7"],  # the first override used to be the "preset"
    ["model.num_layers=2", "--config", "{f}", "train.iterations=7"],
    ["model.num_layers=2", "train.iterations=7", "--config", "{f}"],
    ["model.num_layers=2", "--config={f}", "train.iterations=7"],
])
def test_config_file_keeps_every_override_in_any_order(order, config_file, capsys):
    c = _config([a.replace("{f}", str(config_file)) for a in order], capsys)
    assert (c.model.num_layers, c.train.iterations, c.train.seed, c.model.model_dim) == (2, 7, 5, 128)


@pytest.mark.parametrize("order", [
    ["tiny", "model.num_layers=2", "train.iterations=7"],
    ["model.num_layers=2", "tiny", "train.iterations=7"],
    ["model.num_layers=2", "train.iterations=7", "tiny"],
])
def test_preset_anywhere_among_overrides(order, capsys):
    c = _config(order, capsys)
    assert c == get_preset("tiny").replace({"model.num_layers": 2, "train.iterations": 7})


def test_no_preset_is_the_baseline_and_later_overrides_win(capsys):
    assert _config([], capsys) == Config()
    assert _config(["train.seed=1", "train.seed=2"], capsys).train.seed == 2


@pytest.mark.parametrize("argv, needle", [
    (["--config", "{f}", "tiny"], "preset 'tiny' and --config"),
    (["tiny", "--config", "{f}"], "preset 'tiny' and --config"),
    (["tiny", "baseline"], "more than one preset given: ['tiny', 'baseline']"),
    (["tiny", "model.num_layers"], "'model.num_layers': expected a preset name or section.key=value"),
    (["{f}"], "expected a preset name or section.key=value (a config file goes after --config)"),
    (["model.num_layers=2=3"], "model.num_layers: expected an integer, got '2=3'"),
    (["nope"], "preset 'nope': unknown"),
])
def test_positional_mistakes_are_errors(argv, needle, config_file, capsys):
    assert main(["config", *[a.replace("{f}", str(config_file)) for a in argv]]) == 2
    assert needle in capsys.readouterr().err


def test_an_unknown_option_is_still_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["config", "tiny", "--bogus", "model.num_layers=2"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a command without config arguments takes no stray words
        main(["presets", "tiny", "extra"])


def test_environment_errors_reach_the_command_line_naming_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("USE_SWIGLU", "ture")
    assert main(["config", "tiny"]) == 2
    assert "USE_SWIGLU='ture': expected 0/1/true/false" in capsys.readouterr().err


@pytest.mark.parametrize("order", [
    ["tiny", "--name", "n1", "model.num_layers=2", "--dry-run", "train.iterations=7"],
    ["--name", "n1", "model.num_layers=2", "tiny", "train.iterations=7", "--dry-run"],
    ["--dry-run", "model.num_layers=2", "--name", "n1", "train.iterations=7", "tiny"],
    ["model.num_layers=2", "--nproc-per-node", "2", "--name", "n1", "tiny", "train.iterations=7", "--dry-run"],
])
def test_train_options_and_overrides_in_any_order(order, capture, tmp_path):
    seen = capture(pgolf.running.launch, "launch")
    with pytest.raises(Captured):
        main(["train", *order])
    cfg, path, args = seen["args"]
    assert cfg == get_preset("tiny").replace({"model.num_layers": 2, "train.iterations": 7})
    assert path.name == "n1" and args.dry_run


@pytest.mark.parametrize("order", [
    ["--config", "{f}", "model.num_layers=2", "--dry-run", "train.iterations=7"],
    ["model.num_layers=2", "--dry-run", "train.iterations=7", "--config", "{f}"],
])
def test_train_with_config_file_keeps_every_override(order, capture, config_file):
    seen = capture(pgolf.running.launch, "launch")
    with pytest.raises(Captured):
        main(["train", *[a.replace("{f}", str(config_file)) for a in order]])
    cfg, path, _ = seen["args"]
    assert (cfg.model.num_layers, cfg.train.iterations, cfg.train.seed) == (2, 7, 5)
    assert path.name.startswith("start-")  # a run named after the config file, not after a preset


def test_size_and_bench_take_overrides_after_options(capture, config_file):
    seen = capture(pgolf.running.sizing, "size_estimate")
    with pytest.raises(Captured):
        main(["size", "--config", str(config_file), "model.num_layers=2", "--fast", "train.iterations=7"])
    assert (seen["cfg"].model.num_layers, seen["cfg"].train.iterations, seen["cfg"].train.seed) == (2, 7, 5)
    seen = capture(pgolf.running.bench, "bench")
    with pytest.raises(Captured):
        main(["bench", "model.num_layers=2", "--steps", "2", "tiny", "train.iterations=7"])
    assert seen["cfg"] == get_preset("tiny").replace({"model.num_layers": 2, "train.iterations": 7})


def test_quickstart_takes_overrides_around_its_options(capture, monkeypatch, tmp_path, capsys):
    import pgolf.running.quickstart
    (tmp_path / "manifest.json").write_text("{}")
    monkeypatch.setattr(pgolf.data.build, "build_dataset", lambda *a, **kw: tmp_path)
    monkeypatch.setattr(pgolf.running.quickstart, "calibrate_threads", lambda cfg: {1: 10.0, 2: 5.0})
    seen = capture(pgolf.core.train, "train")
    with pytest.raises(Captured):
        main(["quickstart", "model.num_layers=2", "--name", "q1", "train.iterations=7"])
    assert (seen["cfg"].model.num_layers, seen["cfg"].train.iterations) == (2, 7)
    assert seen["cfg"].data.path == str(tmp_path) and seen["args"][1].name == "q1"
    assert main(["quickstart", "tiny"]) == 2  # quickstart always trains tiny; a preset word is a mistake
    assert "this command takes no preset" in capsys.readouterr().err


def test_quickstart_trains_a_fixed_number_of_steps_on_the_faster_thread_count(capture, monkeypatch, tmp_path, capsys):
    """Every machine trains the same run: N steps, no wallclock cap; the tiny preset itself is unchanged."""
    import pgolf.running.quickstart
    (tmp_path / "manifest.json").write_text("{}")
    monkeypatch.setattr(pgolf.data.build, "build_dataset", lambda *a, **kw: tmp_path)
    monkeypatch.setattr(pgolf.running.quickstart, "calibrate_threads", lambda cfg: {1: 10.0, 2: 5.0})
    seen = capture(pgolf.core.train, "train")
    with pytest.raises(Captured):
        main(["quickstart"])
    want = get_preset("tiny").replace({"data.path": str(tmp_path), "train.num_threads": 2,
                                       "train.iterations": pgolf.running.quickstart.QUICKSTART_STEPS,
                                       "train.max_wallclock_seconds": 0.0})
    first, calibration = capsys.readouterr().out.splitlines()[:2]
    assert seen["cfg"] == want and first.startswith("pgolf quickstart: ")  # says at once what it does
    assert calibration == "threads:1 ms/step:10.0 threads:2 ms/step:5.0 -> train.num_threads=2"
    tiny = get_preset("tiny").train
    assert (tiny.iterations, tiny.max_wallclock_seconds, tiny.num_threads) == (2000, 150.0, 0)
    monkeypatch.setattr(pgolf.running.quickstart, "calibrate_threads", None)  # an explicit thread count is not measured
    with pytest.raises(Captured):
        main(["quickstart", "train.num_threads=1"])
    assert seen["cfg"].train.num_threads == 1


@pytest.mark.parametrize("require_fit", [False, True])
def test_over_cap_run_says_so_and_fails_only_when_required(require_fit, micro, tmp_path, monkeypatch, capsys):
    """A tiny model cannot exceed 16 MB, so the cap is lowered to 1,000 bytes for this run."""
    import pgolf.core.accounting
    from pgolf.core.runs import read_status

    monkeypatch.setattr(pgolf.core.accounting, "CAP_BYTES", 1000)
    cfg_file = tmp_path / "micro.json"
    cfg_file.write_text(micro().to_json())
    run = tmp_path / "run"
    rc = main(["train", "--config", str(cfg_file), "--run-dir", str(run), f"export.require_fit={require_fit}"])
    captured = capsys.readouterr()
    summary = json.loads((run / "summary.json").read_text())  # written either way
    line = next(x for x in (run / "train.log").read_text().splitlines() if x.startswith("over_cap: "))
    total = summary["total_bytes"]
    assert line == (f"over_cap: total {total:,} bytes > 1,000 by {total - 1000:,} "
                    f"(artifact {summary['artifact_bytes']:,} + code {summary['code_bytes']:,})")
    assert line in captured.out and summary["fits_16mb"] is False
    if require_fit:
        assert rc == 1 and "pgolf: run failed: export.require_fit: over_cap: total" in captured.err
        assert summary["status"] == "failed" and summary["error"] == f"export.require_fit: {line}"
        assert read_status(run)["status"] == "failed"
    else:
        assert rc == 0 and summary["status"] == "finished" and read_status(run)["status"] == "finished"


def test_presets_lists_every_preset_with_its_parameter_count(capsys):
    assert main(["presets"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == set(PRESETS)
    for name in ("tiny", "baseline"):  # counted on the meta device; a real build has the same parameters
        n = sum(p.numel() for p in build_model(get_preset(name)).parameters())
        assert rows[name].split()[1] == f"{n:,}"
        assert rows[name].endswith(describe(name).splitlines()[0])
    assert main(["presets", "tiny"]) == 0
    n = sum(p.numel() for p in build_model(get_preset("tiny")).parameters())
    assert capsys.readouterr().out == f"tiny: {n:,} parameters\n\n{describe('tiny')}\n"


def test_size_table_is_headed_by_the_trained_weight_estimate(capsys, monkeypatch):
    assert main(["size", "tiny", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main(["size", "tiny"]) == 0
    lines = capsys.readouterr().out.splitlines()
    total, spare = report["surrogate_total_bytes"], 16_000_000 - report["surrogate_total_bytes"]
    assert lines[0] == f"pgolf size tiny: {total:,} bytes of 16,000,000 -> fits, {spare:,} bytes to spare"
    assert lines[1].split()[:3] == ["artifact", f"{report['surrogate_bytes']:,}", "bytes"]
    assert lines[2].split()[:3] == ["code", f"{report['code_bytes']:,}", "bytes"]
    assert "packed train_gpt.py" in lines[2] and f"raw {report['code_bytes_raw']:,} bytes" in lines[2]
    assert f"unpacked: {report['code_bytes_human']:,} bytes (the readable train_gpt_human.py)" in lines[2]
    assert report["code_bytes"] < report["code_bytes_human"] < report["code_bytes_raw"]
    assert "Gaussian stand-in for trained weights" in lines[3]
    header = lines.index(next(x for x in lines if x.startswith("class")))
    rows = {x.split()[0]: x.split() for x in lines[header + 1:]}
    assert set(rows) == {*report["surrogate_classes"], "total"}
    for cls, c in report["surrogate_classes"].items():
        assert rows[cls][1:] == [str(c["tensors"]), f"{c['params']:,}", "+".join(
            f"int{k}" if k.isdigit() else k for k in c["storage"]), f"{c['payload_bytes']:,}",
            f"{c['compressed_bytes']:,}"]
    assert rows["total"][2] == f"{sum(p.numel() for p in build_model(get_preset('tiny')).parameters()):,}"
    assert rows["total"][4] == f"{report['surrogate_bytes']:,}"
    monkeypatch.setattr(pgolf.core.accounting, "CAP_BYTES", 1000)
    assert main(["size", "tiny", "--fast"]) == 0
    out = capsys.readouterr().out
    assert f"of 1,000 -> DOES NOT FIT: over by {total - 1000:,} bytes" in out
    assert out.splitlines()[-2].split()[-1] == "-"  # --fast: no per-class compression


@pytest.mark.parametrize("argv", [["presets"], ["config", "baseline"], ["size", "tiny", "--fast"]])
def test_a_closed_pipe_ends_the_command_quietly(argv):
    """``pgolf ... | head -1``: the reader is gone before the output is written (the read end is closed first,
    so the write always meets a closed pipe); no traceback, exit status 141 (128 + SIGPIPE)."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    env = {**os.environ, "PYTHONPATH": str(Path(pgolf.__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pgolf", *argv], stdout=write_fd, stderr=subprocess.PIPE, env=env,
                          text=True, timeout=300)
    os.close(write_fd)
    assert (proc.returncode, proc.stderr) == (128 + signal.SIGPIPE, "")


def test_a_broken_pipe_elsewhere_is_still_an_error(monkeypatch):
    """Only a closed stdout is taken for a reader that left; a BrokenPipeError from anything else propagates."""
    def broken(args):
        raise BrokenPipeError("a socket")
    monkeypatch.setattr(pgolf.running.cli, "cmd_config", broken)
    with pytest.raises(BrokenPipeError):
        main(["config", "tiny"])
