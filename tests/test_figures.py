import json

import pytest

from pgolf.research import figures
from pgolf.research.results import load_metrics, load_runs


def _write_run(root, ablation, arm, seed, q_val_bpb, status="finished"):
    run_dir = root / ablation / f"{arm}_s{seed}"
    run_dir.mkdir(parents=True)
    summary = {"status": status, "name": f"{arm}_s{seed}", "arm": arm, "seed": seed, "steps": 20,
               "train_time_ms": 1000, "val_loss": q_val_bpb / 0.59 - 0.01, "val_bpb": q_val_bpb - 0.006,
               "q_val_loss": q_val_bpb / 0.59, "q_val_bpb": q_val_bpb, "artifact_bytes": 1000,
               "code_bytes": 100, "total_bytes": 1100, "model_params": 5000}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    rows = [{"step": step, "train_loss": 4.0 - 0.1 * step, "train_time_ms": 50 * step, "lr_scale": 1.0}
            for step in range(1, 21)]
    rows += [{"step": step, "val_loss": 3.0 - 0.05 * step, "val_bpb": q_val_bpb + 0.5 - 0.02 * step}
             for step in (0, 10, 20)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1, 2):
        _write_run(root, "lr_sweep", "base", seed, 1.30 + 0.01 * seed)
        _write_run(root, "lr_sweep", "high_lr", seed, 1.28 + 0.01 * seed)
        _write_run(root, "mlp", "relu2", seed, 1.25 + 0.01 * seed)
    _write_run(root, "mlp", "swiglu", 0, 9.9, status="failed")
    (root / "notebooks").mkdir()  # executed notebooks live beside the runs and are not runs
    return root


def test_load_runs_keeps_finished_runs_only(runs_root):
    runs = load_runs(runs_root)
    assert len(runs) == 9 and set(runs["ablation"]) == {"lr_sweep", "mlp"}
    assert "swiglu" not in set(runs["arm"])
    assert len(load_runs(runs_root, status=None)) == 10
    assert len(load_runs(runs_root / "mlp")) == 3  # one ablation folder works as a root too


def test_load_metrics_is_long_format_with_run_keys(runs_root):
    metrics = load_metrics(runs_root)
    assert len(metrics) == 9 * 23
    val = metrics.dropna(subset=["val_bpb"])
    assert len(val) == 9 * 3 and {"ablation", "arm", "seed", "step"} <= set(val.columns)


def test_every_builder_tolerates_any_runs_folder_and_is_byte_identical(runs_root, tmp_path):
    """Study folders next to plain, failed and quickstart runs, no dataset anywhere: every builder runs."""
    for seed in (0, 1):
        _write_run(runs_root, "swiglu_vs_relu2", "control", seed, 1.3 + 0.01 * seed)
        _write_run(runs_root, "swiglu_vs_relu2", "swiglu_matched", seed, 1.29)
        _write_run(runs_root, "smeargate", "control", seed, 1.3 + 0.01 * seed)
        _write_run(runs_root, "smeargate", "smear_per_dim", seed, 1.28)
        _write_run(runs_root, "qat", "no_control_here", seed, 1.3)  # a study folder without the control
    _write_run(runs_root, "quickstart", "quickstart", 0, 2.2)
    plain = runs_root / "my-run"
    plain.mkdir()
    (plain / "summary.json").write_text(json.dumps({"status": "finished", "name": "my-run", "q_val_bpb": 2.0}))
    failed = runs_root / "crashed"
    failed.mkdir()
    (failed / "metrics.jsonl").write_text('{"step": 1, "train_loss": 5.0}\n')
    out_dir = tmp_path / "figures"
    paths = figures.regenerate(runs_root=runs_root, out_dir=out_dir)
    assert sorted(p.name for p in paths) == ["quickstart.svg", "smeargate.svg", "swiglu_vs_relu2.svg"]
    first = [p.read_bytes() for p in paths]
    assert [p.read_bytes() for p in figures.regenerate(runs_root=runs_root, out_dir=out_dir)] == first


def test_unknown_figure_name_suggests_a_close_one():
    with pytest.raises(KeyError, match="Did you mean 'smeargate'"):
        figures.regenerate(["smeargat"])


def test_empty_runs_folder_builds_nothing(tmp_path):
    assert figures.regenerate(runs_root=tmp_path, out_dir=tmp_path / "figures") == []


def _texts(fig):
    """The figure's title-like texts (suptitle, caption, panel titles, axis labels) with their extents."""
    fig.draw_without_rendering()
    renderer = fig._get_renderer()
    texts = [t for t in (fig._suptitle, fig._supxlabel) if t is not None and t.get_text()]
    for ax in fig.axes:
        if ax.get_visible():
            texts += [t for t in (ax.title, ax.xaxis.label, ax.yaxis.label) if t.get_text()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts], fig.bbox


def _captured(monkeypatch):
    from pgolf.research import plots
    seen = []
    real = plots.save

    def save(fig, out_dir, stem, formats=("svg",)):
        seen.append((stem, fig))
        return real(fig, out_dir, stem, formats)
    monkeypatch.setattr(plots, "save", save)
    return seen


def test_figures_fit_a_page_with_no_colliding_or_clipped_titles(runs_root, tmp_path, monkeypatch):
    """One style: at most a page (7 in) wide, and no suptitle, panel title or axis label overlaps another or
    leaves the figure (the old long Δ labels ran into the suptitle and off the top)."""
    for seed in (0, 1, 2):
        _write_run(runs_root, "swiglu_vs_relu2", "control", seed, 1.3 + 0.01 * seed)
        _write_run(runs_root, "swiglu_vs_relu2", "swiglu_matched", seed, 1.29 - 0.002 * seed)
    _write_run(runs_root, "quickstart", "tiny", 0, 2.2)
    seen = _captured(monkeypatch)
    figures.regenerate(["quickstart", "swiglu_vs_relu2"], runs_root=runs_root, out_dir=tmp_path / "f")
    assert [stem for stem, _ in seen] == ["quickstart", "swiglu_vs_relu2"]
    for stem, fig in seen:
        assert fig.get_figwidth() <= 7.0, stem
        texts, box = _texts(fig)
        for i, (a, ea) in enumerate(texts):
            assert box.x0 - 1 <= ea.x0 and ea.x1 <= box.x1 + 1 and box.y0 - 1 <= ea.y0 and ea.y1 <= box.y1 + 1, \
                f"{stem}: {a!r} is clipped"
            for b, eb in texts[i + 1:]:
                assert not ea.overlaps(eb), f"{stem}: {a!r} overlaps {b!r}"


def test_delta_axis_names_its_reference_and_unit():
    import pandas as pd
    from pgolf.research import plots
    pairs = pd.DataFrame({"arm": ["gptq"] * 3, "seed": [0, 1, 2], "diff": [-0.01, -0.02, -0.015]})
    ax = plots.plot_paired_deltas(pairs, reference="rtn quantile").axes[0]
    assert ax.get_ylabel() == "Δ q_val_bpb vs rtn quantile (bpb)"
    ax = plots.plot_paired_deltas(pairs, metric="val_bpb", reference="L=128", horizontal=True).axes[0]
    assert ax.get_xlabel() == "Δ val_bpb vs L=128 (bpb)" and [t.get_text() for t in ax.get_yticklabels()] == ["gptq"]


def test_figures_format_option_writes_each_format_deterministically(runs_root, tmp_path, capsys):
    from pgolf.running.cli import main
    for seed in (0, 1):
        _write_run(runs_root, "swiglu_vs_relu2", "control", seed, 1.3 + 0.01 * seed)
        _write_run(runs_root, "swiglu_vs_relu2", "swiglu_matched", seed, 1.29)
    out = tmp_path / "figs"
    paths = figures.regenerate(["swiglu_vs_relu2"], runs_root=runs_root, out_dir=out, formats=("svg", "png", "pdf"))
    assert [p.name for p in paths] == ["swiglu_vs_relu2.svg", "swiglu_vs_relu2.png", "swiglu_vs_relu2.pdf"]
    first = [p.read_bytes() for p in paths]
    figures.regenerate(["swiglu_vs_relu2"], runs_root=runs_root, out_dir=out, formats=("svg", "png", "pdf"))
    assert [p.read_bytes() for p in paths] == first
    assert [p.name for p in figures.regenerate(["swiglu_vs_relu2"], runs_root=runs_root, out_dir=tmp_path / "d")] \
        == ["swiglu_vs_relu2.svg"]  # svg only by default: the committed figures
    assert main(["figures", "--format", "svg,gif", "--runs-root", str(runs_root)]) == 2
    assert "unknown figure format gif" in capsys.readouterr().err


def test_committed_figures_fit_a_page():
    """Every committed figure is at most a page (7 in, 504 pt) wide, bbox included (qat.svg was 19.5 in)."""
    import re
    from pathlib import Path
    for svg in sorted((Path(__file__).resolve().parents[1] / "figures").glob("*.svg")):
        width = float(re.search(r'<svg[^>]*width="([0-9.]+)pt"', svg.read_text()).group(1))
        assert width <= 7.2 * 72, f"{svg.name}: {width / 72:.1f} in wide"


# ---- the committed studies' figures (issue 22, finding 10), built from runs/ ---------------------------------

def _committed_runs_or_skip():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "runs"
    if not (root / "frontier" / "analysis").is_dir():
        pytest.skip("the committed runs/ are not in this checkout")
    return root


@pytest.fixture(scope="module")
def committed_figures(tmp_path_factory):
    """The four study figures the review found defects in, built from the committed runs/ (figures kept open)."""
    from pgolf.research import plots
    root = _committed_runs_or_skip()
    seen = {}
    real = plots.save

    def save(fig, out_dir, stem, formats=("svg",)):
        seen[stem] = fig
        return real(fig, out_dir, stem, formats)
    mp = pytest.MonkeyPatch()
    mp.setattr(plots, "save", save)
    try:
        figures.regenerate(["qat", "smeargate", "eval", "frontier"], runs_root=root,
                           out_dir=tmp_path_factory.mktemp("committed"))
    finally:
        mp.undo()
    return seen


def test_committed_study_figures_have_no_colliding_or_clipped_titles(committed_figures):
    """Suptitle, panel titles, axis labels and legends of qat/smeargate/eval/frontier stay inside the figure and
    apart (the review found suptitles on panel titles and clipped y labels); each is at most a page wide."""
    assert sorted(committed_figures) == ["eval", "frontier", "qat", "smeargate"]
    for stem, fig in committed_figures.items():
        assert fig.get_figwidth() <= 7.0, stem
        texts, box = _texts(fig)
        renderer = fig._get_renderer()
        texts += [("legend", ax.get_legend().get_window_extent(renderer)) for ax in fig.axes if ax.get_legend()]
        for i, (a, ea) in enumerate(texts):
            assert box.x0 - 1 <= ea.x0 and ea.x1 <= box.x1 + 1 and box.y0 - 1 <= ea.y0 and ea.y1 <= box.y1 + 1, \
                f"{stem}: {a!r} is clipped"
            for b, eb in texts[i + 1:]:
                assert not ea.overlaps(eb), f"{stem}: {a!r} overlaps {b!r}"


def test_frontier_shows_bytes_and_names_the_same_weights_reference(committed_figures):
    """SD-clip's point is fewer bytes: a panel of the paired artifact-size difference exists; every panel
    against rtn quantile says so (not "vs control"), and only the trained-arms panel is against the control."""
    labels = [ax.get_ylabel() for ax in committed_figures["frontier"].axes]
    assert any(lab.startswith("Δ artifact size (kB)") and "rtn quantile, same weights" in lab for lab in labels)
    same_weights = [lab for lab in labels if "rtn quantile, same weights" in lab]
    assert len(same_weights) == 3 and sum("vs control" in lab for lab in labels) == len(labels) - 3


def test_qat_rule_line_only_on_score_panels(committed_figures):
    """The 0.005-nat rule scores q_val_bpb: its red dashed line is on the score panels and not on the quantization
    gap or pre-quantization panels."""
    fig = committed_figures["qat"]
    rules = {ax.get_title() or ax.get_ylabel(): any(line.get_color() == "C3" for line in ax.get_lines())
             for ax in fig.axes}
    by_column = [any(line.get_color() == "C3" for line in ax.get_lines()) for ax in fig.axes]
    ncols = 3
    assert all(by_column[i] for i in range(0, len(by_column), ncols)), rules
    assert not any(by_column[i] for i in range(len(by_column)) if i % ncols), rules


def test_smeargate_gate_panel_names_widths_and_keeps_its_legend_off_the_data(committed_figures):
    fig = committed_figures["smeargate"]
    gate_ax = next(ax for ax in fig.axes if ax.get_title().startswith("learned gates"))
    legend = gate_ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert any("d = 64" in t for t in labels) and any("d = 128" in t for t in labels)
    assert all("(d = " in t for t in labels), labels
    renderer = fig._get_renderer()
    assert not legend.get_window_extent(renderer).overlaps(gate_ax.get_window_extent(renderer))


def test_horizontal_deltas_put_n_in_the_tick_labels_not_over_them():
    """eval: with different n per arm, n is part of each arm's tick label; no annotation that can collide."""
    import pandas as pd
    from pgolf.research import plots
    pairs = pd.DataFrame({"arm": ["a"] * 3 + ["b"] * 2, "seed": [0, 1, 2, 0, 1],
                          "diff": [-0.01, -0.02, -0.015, 0.01, 0.02]})
    ax = plots.plot_paired_deltas(pairs, metric="val_bpb", reference="L=128", horizontal=True).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a (n=3)", "b (n=2)"]
    assert not ax.texts


# ---- rate-distortion (issue 22, finding 1) --------------------------------------------------------------------

def _rate_distortion_table(root):
    """A stored rate_distortion table: two seeds, the quantile curve at 4..8 bits and SD-clip at 4/6 bits x 3 k."""
    import pandas as pd
    from pgolf.research import rate_distortion
    from pgolf.research.tables import write_table
    rows = []
    for seed in (0, 1):
        for quantizer in ("rtn", "gptq"):
            for s in rate_distortion.settings(quantizers=[quantizer], quantile_bits=[4, 5, 6, 7, 8],
                                              sdclip_bits=[4, 6], sigmas=[3, 5, 12.85]):
                nbytes = 60_000 + 12_000 * (s.bits - 4) - 1_500 * s.sigmas
                gap = 0.4 / 2 ** (1.5 * (s.bits - 3)) * (1 + s.sigmas / 4) + 0.001 * seed
                rows.append({**s.__dict__, "run": f"micro/control-s{seed}-x", "seed": seed, "clipped_frac": 0.0,
                             "val_bpb_fp": 2.1, "q_val_bpb": 2.1 + gap, "gap_bpb": gap, "artifact_bytes": nbytes,
                             "matrix_bytes": nbytes - 50_000, "tokens_scored": 100})
    write_table(rate_distortion.TABLE.path(root), {}, pd.DataFrame(rows))


def test_rate_distortion_figure_plots_bpb_against_bytes_per_clip_rule(tmp_path, monkeypatch):
    """Registered for ``pgolf figures``; one panel per quantizer with bytes on x, drawn from the stored table alone,
    a page wide at most, with no title, label or legend clipped or overlapping."""
    assert "rate_distortion" in figures.FIGURES
    root = tmp_path / "runs"
    assert figures.regenerate(["rate_distortion"], runs_root=root, out_dir=tmp_path / "f") == []  # no table yet
    _rate_distortion_table(root)
    seen = _captured(monkeypatch)
    paths = figures.regenerate(["rate_distortion"], runs_root=root, out_dir=tmp_path / "f")
    assert [p.name for p in paths] == ["rate_distortion.svg"]
    (stem, fig), = seen
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["round to nearest (n = 2 seeds)", "GPTQ (n = 2 seeds)"]
    assert all("bytes" in ax.get_xlabel() for ax in axes) and fig.get_figwidth() <= 7.0
    # per panel: the quantile curve (5 bit widths) and one SD-clip line per bit width (3 k each)
    assert [len(line.get_xdata()) for line in axes[0].get_lines()] == [5, 3, 3]
    texts, box = _texts(fig)
    renderer = fig._get_renderer()
    texts += [("legend", legend.get_window_extent(renderer)) for legend in fig.legends]
    for i, (a, ea) in enumerate(texts):
        assert box.x0 - 1 <= ea.x0 and ea.x1 <= box.x1 + 1 and box.y0 - 1 <= ea.y0 and ea.y1 <= box.y1 + 1, a
        for b, eb in texts[i + 1:]:
            assert not ea.overlaps(eb), f"{a!r} overlaps {b!r}"
    assert figures.regenerate(["rate_distortion"], runs_root=root, out_dir=tmp_path / "f")[0].read_bytes() \
        == paths[0].read_bytes()
