"""``pgolf bench loop``: one research-loop run (the ``micro`` scale's control, by default) of two revisions of pgolf,
side by side on this machine, interleaved, timed in CPU seconds.

The baseline revision is checked out into a temporary git worktree (removed afterwards); the other variant is the
working tree this command runs from. Each variant trains in the process its own ablation engine would start:
a small script run under each tree asks it for the scale's control config
(:func:`pgolf.research.protocol.control_config`) and for :func:`pgolf.research.ablate.command`'s command and
environment, so a change to either (an allocator setting, a lighter entry point) is part of what is timed. The
bench's own ``MALLOC_*`` and ``PYTHONPATH`` are not passed on; both variants read the same dataset
(:func:`pgolf.core.paths.data_root`). The plan also fills the cache of the packed code's size
(:func:`pgolf.core.accounting.code_bytes`, computed once per code and config), so no timed run pays for packing,
as in a study where only an arm's first run does; both trees' modules are byte-compiled first, so the
baseline's fresh worktree does not pay for that in its first timed run either.

Rounds alternate the order (baseline first, then the new code first, ...), so a change of load on a shared
machine falls on both. Each run's CPU time is its user + system time from ``wait4`` (its own process and the
ones it waited for), the headline on a machine that other jobs load; wall time and peak RSS are printed beside
it, with the load average before and after each run. The command also checks that every run scored the same:
val_loss, val_bpb, q_val_loss, q_val_bpb and the artifact's bytes and SHA-256 from each ``summary.json``.

With ``study_runs=N`` each variant trains, per round, a study-like batch of N control runs (seeds ``seed`` to
``seed + N - 1``) instead of one: the baseline one process per run, as its ablation engine started them, the new
code through one persistent worker (:mod:`pgolf.research.worker_server`, as its local launcher trains a slot's
runs), which pays ``import torch`` and pgolf once for the batch. Times are per run (the batch's divided by N); the
scores of each seed must agree across every batch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf.core.config import ConfigError

SCORE_KEYS = ("val_loss", "val_bpb", "q_val_loss", "q_val_bpb", "artifact_bytes")
STRIPPED_ENV_PREFIXES = ("MALLOC_", "GLIBC_TUNABLES", "PYTHONPATH")

# Run under each variant's tree: its control config and its ablation engine's command and environment, as JSON.
_PLAN_SCRIPT = """
import json, os, sys
from pathlib import Path
from pgolf.research.ablate import PlannedRun, command
from pgolf.research.protocol import control_config
scale, seed, cfg_file, run_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
cfg = control_config(scale, {"train.seed": seed, "data.order_seed": seed})
cfg_file.write_text(cfg.to_json())
cmd, env = command(PlannedRun("control", seed, cfg, run_dir), "bench-loop", 1, write=False)
cmd[cmd.index(str(run_dir.parent / f".{run_dir.name}.config.json"))] = str(cfg_file)
from pgolf.core.accounting import code_bytes
code_bytes(cfg)  # the packed-code size is cached per code and config: warm, as for all but a study's first run
print(json.dumps({"cmd": cmd, "env": {k: v for k, v in env.items() if os.environ.get(k) != v}}))
"""


@dataclass
class Variant:
    name: str  # "baseline" or "new"
    label: str  # the revision, or "working tree"
    tree: Path


@dataclass
class Timing:
    variant: str
    round: int
    cpu_s: float
    sys_s: float  # the system (kernel) part of cpu_s: page faults show here
    wall_s: float
    max_rss_mib: float
    load_before: float
    load_after: float
    scores: dict[str, Any]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def child_env(tree: Path, extra: dict[str, str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the bench's own allocator settings and PYTHONPATH, plus the data root, the tree
    on the path and ``extra`` (what the variant's ablation engine adds)."""
    from pgolf.core.paths import data_root
    environ = dict(os.environ if environ is None else environ)
    env = {k: v for k, v in environ.items() if not k.startswith(STRIPPED_ENV_PREFIXES)}
    return {**env, "PGOLF_DATA": str(data_root()), "PYTHONPATH": str(tree), **extra}


def plan(variant: Variant, scale: str, seed: int, work: Path) -> tuple[list[str], dict[str, str]]:
    """The variant's command and the environment it adds, from its own code (:data:`_PLAN_SCRIPT`)."""
    cfg_file = work / f"{variant.name}.config.json"
    probe = work / f"{variant.name}-probe"
    out = subprocess.run([sys.executable, "-c", _PLAN_SCRIPT, scale, str(seed), str(cfg_file), str(probe)],
                         env=child_env(variant.tree, {}), cwd=variant.tree, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"bench loop: {variant.name} ({variant.label}) could not plan its run: "
                           f"{out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["cmd"], got["env"]


def run_scores(run_dir: Path) -> dict[str, Any]:
    """The scores a bit-identical run must repeat: SCORE_KEYS from summary.json and the artifact's SHA-256."""
    summary = json.loads((run_dir / "summary.json").read_text())
    scores = {k: summary.get(k) for k in SCORE_KEYS}
    scores["artifact_sha256"] = hashlib.sha256((run_dir / summary["artifact_file"]).read_bytes()).hexdigest()
    return scores


def timed_run(cmd: list[str], env: dict[str, str], cwd: Path, run_dir: Path,
              log: Path) -> tuple[float, float, float, float]:
    """(CPU seconds, of them system seconds, wall seconds, peak RSS MiB) of one run, from wait4; raises if it
    fails."""
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"bench loop: run {run_dir.name} failed with exit code {proc.returncode}; see {log}")
    return usage.ru_utime + usage.ru_stime, usage.ru_stime, wall, usage.ru_maxrss / 1024


def timed_server(cmds: list[list[str]], env: dict[str, str], cwd: Path, run_dirs: list[Path],
                 log: Path) -> tuple[float, float, float, float]:
    """(CPU seconds, of them system seconds, wall seconds, peak RSS MiB) of a persistent worker that trains the runs
    of ``cmds`` (ablate_worker commands: their config, run folder replaced by ``run_dirs``, labels) one after
    another; raises if one fails."""
    from pgolf.research.worker_server import server_command
    outs = [log.with_name(f"{log.stem}-{d.name}.log") for d in run_dirs]
    requests = "".join(json.dumps({"config": c[3], "run_dir": str(d), "labels": c[5], "stdout": str(o)}) + "\n"
                       for c, d, o in zip(cmds, run_dirs, outs))
    with open(log, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(server_command(), env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, text=True)
        proc.stdin.write(requests)
        proc.stdin.close()  # the worker ends after the last request
        replies = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # not Popen.wait: wait4 gives the worker's and its runs' usage
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    codes = [json.loads(line)["returncode"] for line in replies.splitlines()]
    for code, d, o in zip(codes + [None] * (len(run_dirs) - len(codes)), run_dirs, outs):
        if code != 0:
            raise RuntimeError(f"bench loop: run {d.name} in the persistent worker failed ({code}); see {o} and {log}")
    return usage.ru_utime + usage.ru_stime, usage.ru_stime, wall, usage.ru_maxrss / 1024


def bench_loop(baseline_rev: str, scale: str = "micro", seed: int = 0, rounds: int = 2,
               keep: Path | None = None, log=print, study_runs: int = 0) -> dict[str, Any]:
    """Time ``rounds`` runs (``study_runs``: batches of that many runs) of each variant, interleaved; the numbers
    and whether every run scored the same."""
    if rounds < 1:
        raise ConfigError(f"--rounds {rounds}: expected >= 1")
    if study_runs < 0:
        raise ConfigError(f"--study-runs {study_runs}: expected >= 1 (or 0: one run per round)")
    repo = Path(__file__).resolve().parents[2]
    rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{baseline_rev}^{{commit}}"],
                         capture_output=True, text=True)
    if rev.returncode:
        raise ConfigError(f"--baseline-rev {baseline_rev!r}: not a commit of the repository at {repo}")
    sha = rev.stdout.strip()
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="pgolf-bench-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    base_tree = work / "baseline-tree"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet", str(base_tree), sha],
                   check=True, capture_output=True)
    try:
        variants = [Variant("baseline", sha[:10], base_tree), Variant("new", "working tree", repo)]
        for v in variants:  # a fresh worktree has no bytecode yet: no timed run pays for compiling it
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(v.tree / "pgolf")], check=True,
                           capture_output=True)
        seeds = list(range(seed, seed + study_runs)) if study_runs else [seed]
        plans = {v.name: [plan(v, scale, s, work if not study_runs else _mkdir(work / f"plan-s{s}")) for s in seeds]
                 for v in variants}
        for v in variants:
            log(f"{v.name} ({v.label}): adds env {plans[v.name][0][1] or '{}'}")
        timings: list[Timing] = []
        for r in range(rounds):
            for v in variants if r % 2 == 0 else variants[::-1]:
                cmds, dirs = [], []
                for s, (cmd, extra) in zip(seeds, plans[v.name]):
                    run_dir = work / (f"{v.name}-r{r}" + (f"-s{s}" if study_runs else ""))
                    probe = str((work if not study_runs else work / f"plan-s{s}") / f"{v.name}-probe")
                    cmds.append([str(run_dir) if a == probe else a for a in cmd])  # the plan's run folder
                    dirs.append(run_dir)
                env = child_env(v.tree, plans[v.name][0][1])
                load_before = os.getloadavg()[0]
                if study_runs and v.name == "new":
                    cpu, sys_s, wall, rss = timed_server(cmds, env, v.tree, dirs, work / f"{v.name}-r{r}.log")
                else:
                    totals = [timed_run(c, env, v.tree, d, work / f"{d.name}.log") for c, d in zip(cmds, dirs)]
                    cpu, sys_s, wall = (sum(t[i] for t in totals) for i in range(3))
                    rss = max(t[3] for t in totals)
                n = len(dirs)
                scores = (run_scores(dirs[0]) if not study_runs else
                          {f"s{s}.{k}": x for s, d in zip(seeds, dirs) for k, x in run_scores(d).items()})
                t = Timing(v.name, r, cpu / n, sys_s / n, wall / n, rss, load_before, os.getloadavg()[0], scores)
                timings.append(t)
                per = f" per run of {n}" if study_runs else ""
                log(f"round {r} {v.name:<8} cpu:{t.cpu_s:.1f}s (sys {t.sys_s:.1f}s) wall:{t.wall_s:.1f}s{per} "
                    f"peak_rss:{rss:.0f}MiB load:{t.load_before:.2f}->{t.load_after:.2f}")
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(base_tree)], capture_output=True)
    return summarize(timings, {v.name: v.label for v in variants}, scale, seed, work, study_runs)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def summarize(timings: list[Timing], labels: dict[str, str], scale: str, seed: int, work: Path,
              study_runs: int = 0) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for name, label in labels.items():
        ts = [t for t in timings if t.variant == name]
        per[name] = {"label": label, "runs": len(ts), "cpu_s": [t.cpu_s for t in ts], "wall_s": [t.wall_s for t in ts],
                     "cpu_s_mean": statistics.fmean(t.cpu_s for t in ts),
                     "sys_s_mean": statistics.fmean(t.sys_s for t in ts),
                     "wall_s_mean": statistics.fmean(t.wall_s for t in ts),
                     "max_rss_mib": max(t.max_rss_mib for t in ts)}
    first = timings[0].scores
    differ = [f"{t.variant} round {t.round}: {k} {t.scores[k]!r} != {first[k]!r}"
              for t in timings for k in first if t.scores[k] != first[k]]
    return {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "scale": scale, "seed": seed, "work_dir": str(work),
            "study_runs": study_runs,
            "variants": per, "runs": [t.__dict__ for t in timings],
            "cpu_ratio": per["baseline"]["cpu_s_mean"] / per["new"]["cpu_s_mean"],
            "wall_ratio": per["baseline"]["wall_s_mean"] / per["new"]["wall_s_mean"],
            "scores_identical": not differ, "score_differences": differ, "scores": first,
            "load_average_end": os.getloadavg()}


def format_loop_report(r: dict[str, Any]) -> str:
    study = r.get("study_runs") or 0
    batch = f" study_runs:{study} (per-run times: a batch's / {study}; new: one persistent worker)" if study else ""
    lines = [f"bench_loop: scale:{r['scale']} seed:{r['seed']}{batch} cpu:{r['cpu_model']} cpus:{r['cpus']} "
             f"load_average_end:{' '.join(f'{x:.2f}' for x in r['load_average_end'])}"]
    for name, v in r["variants"].items():
        count = f"batches:{v['runs']} of {study} runs" if study else f"runs:{v['runs']}"
        lines.append(f"  {name:<8} ({v['label']}): {count} cpu_mean:{v['cpu_s_mean']:.1f}s "
                     f"[{' '.join(f'{x:.1f}' for x in v['cpu_s'])}] sys_mean:{v['sys_s_mean']:.1f}s wall_mean:{v['wall_s_mean']:.1f}s "
                     f"[{' '.join(f'{x:.1f}' for x in v['wall_s'])}] peak_rss:{v['max_rss_mib']:.0f}MiB")
    lines.append(f"  cpu_ratio (baseline / new): {r['cpu_ratio']:.3f}x  wall_ratio: {r['wall_ratio']:.3f}x")
    if r["scores_identical"]:
        first = f"s{r['seed']}." if study else ""
        s = {k[len(first):]: v for k, v in r["scores"].items() if k.startswith(first)}
        lines.append(f"  scores identical in every run: {'seed ' + str(r['seed']) + ' ' if study else ''}"
                     f"val_bpb:{s['val_bpb']!r} q_val_bpb:{s['q_val_bpb']!r} "
                     f"artifact_bytes:{s['artifact_bytes']} sha256:{s['artifact_sha256'][:16]}"
                     + (f" (and {study - 1} more seeds, each the same in every batch)" if study > 1 else ""))
    else:
        lines.append("  SCORES DIFFER: " + "; ".join(r["score_differences"]))
    return "\n".join(lines)


def cmd_bench_loop(args: argparse.Namespace) -> int:
    r = bench_loop(args.baseline_rev, args.scale, args.seed, args.rounds, args.keep,
                   log=(lambda *_: None) if args.json else (lambda m: print(m, flush=True)),
                   study_runs=args.study_runs)
    print(json.dumps(r, indent=2, default=str) if args.json else format_loop_report(r))
    return 0 if r["scores_identical"] else 1
