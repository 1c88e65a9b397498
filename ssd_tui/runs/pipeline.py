"""SSD rounds and their stages, resumable after any interruption.

Round 0 evaluates the base model (a branch's: its parent's round K model). Round k ≥ 1:
``sample`` training prompts at T_train from round k−1's model (or, after a rollback, the
best round's) → ``train`` round k's LoRA adapter on the ``[rounds] data`` policy's set,
as the ``[rounds] adapter`` policy says → ``evaluate`` round k's model on the held-out
problems → ``analyse``. Between rounds ``[control]`` may stop the run or roll it back
(docs/rounds.md). Every stage skips the work already in the run DB, and every decision is
stored, so rerunning the same command continues where it stopped and decides the same.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from ssd_tui.analysis import control
from ssd_tui.config import RunConfig, config_diff, config_from_json, looks_like_hub_id
from ssd_tui.engine.base import (
    Completion,
    Example,
    Sampler,
    SamplingParams,
    encode_prompt,
    generate_batches,
)
from ssd_tui.engine.choose import EngineChoice, Engines
from ssd_tui.errors import ConfigChangedError, SSDError
from ssd_tui.evaluation.check import check_samples, eval_limits, summarize
from ssd_tui.evaluation.sandbox import Isolation, Limits, choose_isolation
from ssd_tui.evaluation.suspect import suspect_reasons
from ssd_tui.models import adapter_sha256, prepare_model_path
from ssd_tui.problems.leetcode import LEETCODE, leetcode_source
from ssd_tui.problems.load import load_problem_set
from ssd_tui.problems.prompting import extraction_rule, program_for, prompt_for
from ssd_tui.problems.sets import HUMANEVAL, Problem
from ssd_tui.runs import branch as branches
from ssd_tui.runs import policies, record
from ssd_tui.runs.reuse import RoundSource, borrow
from ssd_tui.store.run_store import RunStore, SampleRow

VERDICT_BATCH = 32  # test programs per transaction
# Prompt + completion tokens per forward pass of the exact-statistics pass: its logits are
# (tokens × vocabulary) floats, 2048 × Qwen's 152k ≈ 1.2 GB in float32.
STATS_BATCH_TOKENS = 2048


@dataclass(frozen=True)
class RoundModel:
    """A round's model: ``adapter`` (None: none) on the weights in ``base`` (the run's
    model, a merged copy under RUN_DIR/merged/, or a branch's parent's weights)."""

    base: str
    adapter: str | None


class StopRequested(Exception):
    """Ctrl-C (or SIGINT from the app): stop between batches; rerun to resume."""


class Reporter(Protocol):
    def stage_start(self, rnd: int, stage: str, total: int, done: int) -> None: ...
    def stage_progress(self, done: int, total: int, detail: str = "") -> None: ...
    def stage_end(self, rnd: int, stage: str, status: str) -> None: ...
    def round_end(self, rnd: int, summary: dict[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...


class NullReporter:
    def stage_start(self, rnd, stage, total, done):
        pass

    def stage_progress(self, done, total, detail=""):
        pass

    def stage_end(self, rnd, stage, status):
        pass

    def round_end(self, rnd, summary):
        pass

    def message(self, text):
        pass


def stages_for(rnd: int, cfg: RunConfig) -> list[str]:
    if rnd == 0:
        extra = ["baseline"] if _baseline_temps(cfg) else []
        return ["evaluate", *extra, "analyse"]
    return ["sample", "train", "evaluate", "analyse"]


def _baseline_temps(cfg: RunConfig) -> list[float]:
    return [t for t in cfg.eval.baseline_temperatures if t != cfg.eval.temperature]


def derive_seed(*parts: Any) -> int:
    """A batch's seed from its identity, so a resumed stage draws what an uninterrupted one would."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def resolve_model_path(cfg: RunConfig) -> str:
    """A local model folder (relative to the config), or a hub id found in the local cache."""
    raw = cfg.model.path
    local = cfg.resolve(raw)
    if cfg.model.gguf_file:  # converted once to a cached safetensors folder (docs/models.md)
        return str(prepare_model_path(local, cfg.model.gguf_file))
    if local.exists():
        if not (local / "config.json").exists():
            raise SSDError(
                f"model path {local} has no config.json: not a transformers model folder"
            )
        return str(local)
    looks_like_id = looks_like_hub_id(raw)
    if looks_like_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            if isinstance(try_to_load_from_cache(raw, "config.json"), str):
                return raw
        except Exception:  # noqa: BLE001 - any failure means "not cached"
            pass
    hint = f" (and '{raw}' is not a model in the local Hugging Face cache)" if looks_like_id else ""
    raise SSDError(f"model path does not exist: {local}{hint}")


class Pipeline:
    """Runs a config's rounds against its run DB. One instance per engine process."""

    def __init__(
        self,
        cfg: RunConfig,
        store: RunStore,
        reporter: Reporter | None = None,
        make_sampler: Callable[[str | None], Sampler] | None = None,
        config_toml: str = "",
        engine: EngineChoice | None = None,
        branch: branches.Branch | None = None,
        round0_from: Path | None = None,
        engines: Engines | None = None,
    ):
        self.cfg = cfg
        self.store = store
        self.rep = reporter or NullReporter()
        self.model_path = resolve_model_path(cfg)
        # ``engine``: the choice when the caller made it already; else made on first use.
        # ``engines``: a whole bundle made by the caller (the tests' fake engine,
        # tests/fixtures/fake_engine.py); else this config's.
        self.engines = engines or Engines(
            cfg.engine_settings(), self.model_path, engine, make_sampler
        )
        self._make_sampler = make_sampler
        # The engines of the weights in use: a round on a merged copy gets its own.
        self._active = self.engines
        self.branch = branch  # --from RUN_DIR --round K (a new branch, or its resume)
        self.round0_from = round0_from  # --round0-from RUN_DIR (a sweep's shared round 0)
        # The round whose evaluation may stand for this run's round 0 (runs/reuse.py).
        self.source: RoundSource | None = None
        self.stop_now = False
        self.stop_after_stage = False
        self.config_toml = config_toml
        self.train_problems: list[Problem] = []
        self.eval_problems: list[Problem] = []
        self._ids: dict[str, dict[str, int]] = {}
        self.isolation: Isolation | None = None  # what runs the test programs
        # Round 0's probe reads what was stored when its samples were drawn; False scores
        # them again (benchmarks/bench_probe_reuse.py times both).
        self.reuse_stored = True

    # ---- set-up --------------------------------------------------------------------
    def prepare(self, rounds: int | None = None) -> None:
        """Load problem sets and check the stored config; raise SSDError before any work.
        ``rounds``: the round this process runs to (None: the config's)."""
        cfg = self.cfg
        # A sandbox weaker than asked for stops the run here, not a log line later.
        self.isolation = choose_isolation(cfg.sandbox.isolation)
        choice = self.engines.choice  # an engine that cannot run here stops the run here too
        sets = self._load_problems(rounds)
        info = self.store.run_info()
        lineage = self._lineage(info)
        if info is None:
            self.store.init_run(
                cfg.run.name, self.model_path, cfg.to_json(), self.config_toml, str(cfg.base_dir)
            )
        else:
            stored = config_from_json(info["config_json"], Path(info["base_dir"] or "."))
            changed = config_diff(stored, cfg)
            if changed:
                raise ConfigChangedError(
                    f"the config differs from the one this run started with ({', '.join(changed)}); "
                    "restore it, or start a new run folder"
                )
            stored_sets = record.stored_problem_sets(self.store)
            if stored_sets:  # runs from before the record have none to check against
                record.check_problems(stored_sets, sets)
            self.store.update_config(
                cfg.to_json(), self.config_toml or info["config_toml"], str(cfg.base_dir)
            )
        first = info is None or self.store.meta("ssd_tui_version") is None
        record.record_start(
            self.store,
            event="start" if info is None else "resume",
            config_json=cfg.to_json(),
            config_toml=self.config_toml or (info["config_toml"] if info else "") or "",
            model_path=self.model_path,
            problem_sets=sets,
            prompt=self._prompt_record() if first else {},
            trainer=self.engines.trainer_settings() if first else {},
        )
        self._ids["eval"] = self.store.add_problems("eval", self.eval_problems)
        if self.train_problems:
            self._ids["train"] = self.store.add_problems("train", self.train_problems)
        if lineage:  # round 0 is the parent's round-K model, its evaluation maybe too
            branches.begin(self.store, cfg.run_dir, self.model_path, lineage)
            parent_db = Path(lineage["parent_run"]) / "run.db"
            self.source = RoundSource(parent_db, int(lineage["parent_round"]))
        elif self.round0_from is not None:
            self.source = RoundSource(Path(self.round0_from).resolve(), 0)
        line = choice.line()
        self.store.log(line)
        self.rep.message(line)

    def _load_problems(self, rounds: int | None) -> dict[str, Any]:
        """The evaluation and training problems, and their record (per set: hashes).
        ``rounds``: the round this process runs to (None: the config's)."""
        cfg = self.cfg
        self.eval_problems = load_problem_set(
            cfg.data.benchmark,
            cfg.base_dir,
            require_tests=True,
            limit=cfg.data.max_eval_problems or None,
        )
        if not self.eval_problems:
            raise SSDError(f"benchmark {cfg.data.benchmark} has no problems")
        # Round 0 alone samples no training prompts: it needs none (nor the LeetCode data).
        trains = (cfg.run.rounds if rounds is None else rounds) > 0
        if cfg.data.train_prompts and trains:
            self.train_problems = load_problem_set(
                cfg.data.train_prompts, cfg.base_dir, limit=cfg.data.max_train_prompts or None
            )
        sets = {"eval": record.problem_set_record(cfg.data.benchmark, self.eval_problems)}
        if self.train_problems:
            sets["train"] = record.problem_set_record(cfg.data.train_prompts, self.train_problems)
        return sets

    def _lineage(self, info: dict[str, Any] | None) -> dict[str, str]:
        """This run's lineage: the stored one (checked against ``--from``), or, for a new
        branch, the parent's round checked and written down before anything else."""
        stored = record.lineage(self.store)
        b = self.branch
        if b is None:
            return stored
        if stored:
            if not branches.same_branch(stored, b):
                raise SSDError(
                    f"this run is a branch of {stored['parent_run']} round "
                    f"{stored['parent_round']}, not of {b.parent.parent} round {b.round}"
                )
            return stored
        if info is not None:
            raise SSDError(
                f"{self.cfg.run_dir} holds a run that did not start as a branch; give the "
                "branch a run folder of its own ([run] dir)"
            )
        parent = branches.parent_round(b)
        branches.check_model(parent, self.model_path, self.cfg.run_dir)
        values = branches.lineage_values(parent)
        record.record_lineage(self.store, values)
        return values

    def _prompt_record(self) -> dict[str, str]:
        """The prompt as the model sees it, and the answer → program rule (the run record)."""
        template = ""
        if self.cfg.model.prompt_style == "chat":
            template = str(getattr(self.engines.tokenizer(), "chat_template", "") or "")
        return {
            "prompt_template": template,
            "system_prompt": self.cfg.model.system_prompt
            if self.cfg.model.prompt_style == "chat"
            else "",
            "prompt_example": self.render(self.eval_problems[0]),
            "extraction_rule": extraction_rule(self.cfg.model.prompt_style),
        }

    def release_sampler(self) -> None:
        """Free the sampler's model and device (between commands, and at the end of a run)."""
        self._active.release_sampler()
        self.engines.release_sampler()

    def render(self, problem: Problem) -> str:
        """The prompt text the sampler and the trainer get for ``problem``."""
        style = self.cfg.model.prompt_style
        tokenizer = self.engines.tokenizer() if style == "chat" else None
        return prompt_for(problem, style, self.cfg.model.system_prompt, tokenizer)

    # ---- each round's model -------------------------------------------------------------
    def _round_row(self, rnd: int) -> dict[str, Any] | None:
        return next((r for r in self.store.rounds() if r["round"] == rnd), None)

    def model_of(self, rnd: int) -> RoundModel:
        """Round k's model: its adapter on its weights (round 0: the run's model, or a
        branch's parent's round-K model)."""
        row = self._round_row(rnd) or {}
        base = row.get("base_path") or self.model_path
        if row.get("base_path") and not Path(base).is_absolute():  # a merged copy in the run
            base = str(self.cfg.run_dir / base)
        if not row.get("adapter_path"):
            if rnd == 0:
                return RoundModel(base, None)
            raise SSDError(f"round {rnd} has no trained adapter yet")
        # Adapters live in the run folder (stage_train), and a folder that was moved or
        # set aside (`ssd-tui demo --fresh`) took them along: the stored absolute path may
        # now name another run's adapter, or nothing.
        here = self.cfg.run_dir / "adapters" / Path(row["adapter_path"]).name
        return RoundModel(base, str(here) if here.is_dir() else row["adapter_path"])

    def adapter_of(self, rnd: int) -> str | None:
        """Round k's adapter (None: round 0 of a run that is not a branch)."""
        return self.model_of(rnd).adapter

    def source_round(self, rnd: int) -> int:
        """The round whose model drew round ``rnd``'s training samples: rnd − 1, or the
        best round so far after a rollback."""
        row = self._round_row(rnd) or {}
        src = row.get("source_round")
        return rnd - 1 if src is None else int(src)

    def line_of(self, rnd: int) -> list[int]:
        """The rounds (≥ 1) whose samples made round ``rnd``'s model, newest first: rnd,
        the round it sampled from, that round's, … (a rollback skips the rounds it left)."""
        out, r = [], rnd
        while r >= 1 and r not in out:
            out.append(r)
            r = self.source_round(r)
        return out

    def _as_model(self, model: RoundModel | str | None) -> RoundModel:
        """A round's model, or an adapter (None: none) on the run's model."""
        return model if isinstance(model, RoundModel) else RoundModel(self.model_path, model)

    def _engines_for(self, base: str) -> Engines:
        """The engines of the weights ``base``: a round on other weights than the last one
        (a merged copy) gets engines of its own, and the last ones let go of theirs."""
        if base == self._active.model_path:
            return self._active
        self._active.release_sampler()
        self._active.release_scoring_model()
        if base == self.model_path:
            self._active = self.engines
        else:
            settings = self.cfg.engine_settings()
            self._active = Engines(settings, base, self.engines.choice, self._make_sampler)
        return self._active

    def _engine_label(self) -> str:
        choice = self.engines.choice
        return f"{choice.name} on {choice.platform}" if choice.platform else choice.name

    # ---- the loop -------------------------------------------------------------------------
    def run(self, rounds: int | None = None, max_stages: int | None = None) -> str:
        """Run until round `rounds` is done. Returns 'done', 'paused' (stage limit or
        SIGUSR1) or 'stopped' ([control] ended the run before a round: docs/rounds.md)."""
        last = self.cfg.run.rounds if rounds is None else rounds
        ran = 0
        for rnd in range(0, last + 1):
            stages = stages_for(rnd, self.cfg)
            decision = self._decision(rnd - 1)
            if decision is not None and decision["action"] == "stop":
                self.rep.message(decision["message"])
                return "stopped"
            self.store.plan_round(rnd, stages)
            if rnd >= 1:
                source = decision["next_source"] if decision else rnd - 1
                if (self._round_row(rnd) or {}).get("source_round") != source:
                    self.store.set_round_source(rnd, source)
            for stage in stages:
                row = self.store.stage(rnd, stage)
                if row and row["status"] == "done":
                    continue
                if max_stages is not None and ran >= max_stages:
                    return "paused"
                self._run_stage(rnd, stage)
                ran += 1
                if self.stop_after_stage:
                    return "paused"
            self.rep.round_end(rnd, self.round_summary(rnd))
        return "done"

    def _decision(self, rnd: int) -> dict[str, Any] | None:
        """What [control] decided after round ``rnd`` (made now and stored, once); None
        when the run has nothing to decide (no [control] rule on, or round 0)."""
        if rnd < 1 or not self.cfg.control.active:
            return None
        made = self.store.decision(rnd)
        if made is not None:
            return made
        t = self.cfg.eval.temperature
        scores = [
            s for r in range(rnd + 1) if (s := control.score(r, self.store.pass_counts(r, t)))
        ]
        c = self.cfg.control
        d = control.decide(
            rnd, scores, self.store.warnings(rnd), c.on_collapse, c.stop_after_no_gain
        )
        if d.action != "stop":
            self.rep.message(d.message)
        return self.store.add_decision(rnd, d.action, d.rule, d.next_source, d.message, d.evidence)

    def _run_stage(self, rnd: int, stage: str) -> None:
        store = self.store
        store.start_stage(rnd, stage, total=0, detail="")
        store.log(f"round {rnd}: {stage} started", rnd=rnd, stage=stage)
        t0 = time.time()
        try:
            getattr(self, f"stage_{stage}")(rnd)
        except StopRequested:
            store.end_stage(rnd, stage, "stopped")
            store.log(f"round {rnd}: {stage} stopped; rerun to resume", "warning", rnd, stage)
            self.rep.stage_end(rnd, stage, "stopped")
            raise
        except BaseException as e:
            store.end_stage(rnd, stage, "failed")
            store.log(f"round {rnd}: {stage} failed: {type(e).__name__}: {e}", "error", rnd, stage)
            self.rep.stage_end(rnd, stage, "failed")
            raise
        store.end_stage(rnd, stage, "done")
        store.log(f"round {rnd}: {stage} done in {time.time() - t0:.1f}s", rnd=rnd, stage=stage)
        self.rep.stage_end(rnd, stage, "done")

    def _check_stop(self) -> None:
        if self.stop_now:
            raise StopRequested()

    def _progress(self, rnd: int, stage: str, done: int, total: int, detail: str = "") -> None:
        self.store.progress(rnd, stage, done, total, detail or None)
        self.rep.stage_progress(done, total, detail)

    # ---- stages -------------------------------------------------------------------------
    def stage_sample(self, rnd: int) -> None:
        source = self.model_of(self.source_round(rnd))
        params = self.cfg.train_sampling(seed=self.cfg.run.seed)
        self._generate(
            rnd,
            "sample",
            "train",
            self.train_problems,
            params,
            source,
            self.cfg.sampling.batch_size,
        )

    def _kept(self, rnd: int) -> tuple[list[tuple[int, Example]], int]:
        """Round ``rnd``'s own samples that may be trained on, as (sample id, (prompt,
        completion, finished)), and how many were cut at max_new_tokens (a cut one gets no
        EOS target)."""
        cfg = self.cfg
        by_id = {p.id: p for p in self.train_problems}
        rows = [r for r in self.store.samples(rnd, "train") if r["problem"] in by_id]
        items = [
            (
                r["id"],
                (self.render(by_id[r["problem"]]), r["completion"], r["finish_reason"] != "length"),
            )
            for r in rows
        ]
        n_cut = sum(1 for _, e in items if not e[2])
        if cfg.train.truncated == "drop":
            items = [x for x in items if x[1][2]]
        kept = [x for x in items if _trainable(x[1][1], cfg.train.min_completion_lines)]
        if cfg.train.drop_shortest > 0 and kept:
            kept = sorted(kept, key=lambda x: len(x[1][1]))[
                int(len(kept) * cfg.train.drop_shortest) :
            ]
        return kept, n_cut

    def training_set(self, rnd: int) -> tuple[list[tuple[int, Example]], int]:
        """Round ``rnd``'s training set as ``[rounds] data`` chooses it (runs/policies.py),
        and how many of the round's own samples were cut at max_new_tokens."""
        own, n_cut = self._kept(rnd)
        cache = {rnd: own}

        def kept(r: int) -> list[tuple[int, Example]]:
            if r not in cache:
                cache[r] = self._kept(r)[0]
            return cache[r]

        seed = derive_seed(self.cfg.run.seed, rnd, "train-set")
        chosen = policies.training_set(self.cfg.rounds, rnd, self.line_of(rnd), kept, seed)
        return chosen, n_cut

    def train_examples(self, rnd: int) -> tuple[list[Example], int]:
        """Round ``rnd``'s training examples (prompt, completion, finished), the set its
        adapter trains on, and how many of the round's samples were cut at max_new_tokens."""
        chosen, n_cut = self.training_set(rnd)
        return [e for _, e in chosen], n_cut

    def stage_train(self, rnd: int) -> None:
        cfg = self.cfg
        chosen, n_cut = self.training_set(rnd)
        kept = [e for _, e in chosen]
        total = self.store.count_samples(rnd, "train")
        fate = "dropped" if cfg.train.truncated == "drop" else "kept without EOS"
        rounds = sorted(self.store.rounds_of_samples([sid for sid, _ in chosen]).items())
        drawn = ", ".join(f"{n} of round {r}" for r, n in rounds)
        self.store.log(
            f"round {rnd}: training on {len(kept)} samples ([rounds] data = "
            f"{cfg.rounds.data}: {drawn or 'none'}); of the round's {total}, empty and stub "
            f"samples dropped, {n_cut} cut at max_new_tokens {fate}",
            rnd=rnd,
            stage="train",
        )
        self.store.set_metrics(
            rnd,
            "train",
            cfg.sampling.temperature,
            {
                "all": {
                    "truncated_samples": float(n_cut),
                    "trained_samples": float(len(kept)),
                    "trained_truncated": float(sum(1 for e in kept if not e[2])),
                }
            },
        )
        if not kept:
            cut = " or cut at max_new_tokens ([train] truncated = 'drop')" if n_cut else ""
            raise SSDError(f"round {rnd}: every sample was empty, a stub{cut}; nothing to train on")
        self.store.set_train_set(rnd, [sid for sid, _ in chosen])
        self._train(rnd, kept)

    def _train(self, rnd: int, kept: list[Example]) -> None:
        """Train round ``rnd``'s adapter on ``kept``, on the weights ``[rounds] adapter``
        says, and record the round's model (base weights and adapter)."""
        out = self.cfg.run_dir / "adapters" / f"round-{rnd:03d}"
        base, init = self._train_start(rnd)
        self._progress(rnd, "train", 0, 0, "loading model")
        trainer = self._engines_for(base).trainer()  # the sampler hands it the device
        describe = getattr(trainer, "describe", None)  # a launched trainer (docs/engine.md)
        if describe is not None:
            self.store.log(f"round {rnd}: training with {describe()}", rnd=rnd, stage="train")
        self.rep.stage_start(rnd, "train", 0, 0)
        shown = (0, 0)

        def progress(step: int, total: int) -> None:
            nonlocal shown
            self._check_stop()
            # A launched trainer also calls while no step ends (0, 0 until the first), so
            # that a stop is seen: only a new step is news.
            if total and (step, total) != shown:
                shown = (step, total)
                self._progress(rnd, "train", step, total, "training")

        trainer.train(kept, out, init_adapter=Path(init) if init else None, progress=progress)
        self.store.add_train_log(rnd, trainer.history)
        self.store.set_round_base(rnd, self._stored_base(base))
        self.store.set_adapter(rnd, str(out), adapter_sha256(out))

    def _train_start(self, rnd: int) -> tuple[str, str | None]:
        """(the weights round ``rnd``'s adapter trains on, the adapter it starts from):
        continue = the model it sampled from, its adapter trained on; fresh = a new
        adapter on the base model; merge = a new one on a copy of that model's weights
        with its adapter merged in (docs/rounds.md)."""
        src = self.source_round(rnd)
        prev = self.model_of(src)
        policy = self.cfg.rounds.adapter
        if policy == "continue":
            return prev.base, prev.adapter
        if policy == "fresh" or prev.adapter is None:
            return (self.model_path if policy == "fresh" else prev.base), None
        out = self.cfg.run_dir / "merged" / f"round-{src:03d}"
        if not out.is_dir():  # renamed into place whole: a folder there is a finished merge
            self._progress(rnd, "train", 0, 0, f"merging round {src}'s adapter")
            self.store.log(
                f"round {rnd}: merging round {src}'s adapter into a copy of its weights ({out})",
                rnd=rnd,
                stage="train",
            )
            self._engines_for(prev.base).merge(prev.adapter, out)
        return str(out), None

    def _stored_base(self, base: str) -> str | None:
        """How a round's base weights are stored: None for the run's model, a path
        relative to the run folder for a merged copy in it (it moves with the folder)."""
        if base == self.model_path:
            return None
        try:
            return str(Path(base).relative_to(self.cfg.run_dir))
        except ValueError:
            return base

    def stage_evaluate(self, rnd: int) -> None:
        self._evaluate(rnd, "evaluate", self.cfg.eval.temperature)

    def stage_baseline(self, rnd: int) -> None:
        temps = _baseline_temps(self.cfg)
        for i, t in enumerate(temps):
            self._evaluate(rnd, "baseline", t, label=f"T={t} ({i + 1}/{len(temps)})")

    def stage_analyse(self, rnd: int) -> None:
        # Imported here, each time: an analysis that cannot even be imported must fail this
        # stage (an error the run records), never the whole engine before it starts.
        from ssd_tui.analysis import rounds as analysis

        try:
            # Eval samples an older version stored without exact statistics (a no-op else).
            self.fill_token_stats(
                rnd, "analyse", "eval", None, self.model_of(rnd), self.eval_problems
            )
            scorer = self._scorer(rnd)
            by_name = {p.id: p for p in self.eval_problems}

            def render_row(row: dict[str, Any]) -> str:
                p = by_name.get(row["name"])
                return self.render(p) if p else row["prompt"]

            t0 = time.monotonic()
            warnings = analysis.analyse_round(
                self.store,
                rnd,
                self.cfg,
                scorer,
                render=render_row,
                sandbox=self._behaviour_sandbox(rnd),
            )
        finally:
            self._active.release_scoring_model()
        # (an engine's own scorer, such as the tests' fake engine's, counts neither)
        reused, scored = getattr(scorer, "reused", 0), getattr(scorer, "scored", 0)
        if reused or scored:
            self.store.log(
                f"round {rnd}: fork/lock probe of {reused + scored} samples: "
                f"{reused} read as stored when they were drawn, {scored} scored "
                f"(analysis {time.monotonic() - t0:.1f}s)",
                rnd=rnd,
                stage="analyse",
            )
        for w in warnings:
            self.store.log(
                f"round {rnd}: warning [{w['rule']}] {w['message']}", "warning", rnd, "analyse"
            )

    def _behaviour_sandbox(self, rnd: int) -> Any:
        """Where the analyse stage runs behaviour programs: the evaluation's sandbox and limits."""
        from ssd_tui.analysis.recording import SandboxSettings  # with the analysis: see above

        iso = self.isolation or choose_isolation(self.cfg.sandbox.isolation)
        self.store.note_sandbox(rnd, "analyse", iso.label)
        return SandboxSettings(
            eval_limits(self.cfg),
            self.cfg.eval.workers or os.cpu_count() or 1,
            iso,
            tuple(self._unseen()),
            progress=lambda done, total: self._progress(rnd, "analyse", done, total, "behaviours"),
        )

    def _scorer(self, rnd: int) -> Callable[[list[str], list[str]], list[dict[str, Any]]]:
        """Teacher-forced scoring with round ``rnd``'s model (any engine:
        Engines.scoring_model, loaded only if a sample must be scored). Round 0's probe
        samples were scored when they were drawn (``_with_probe_stats``): their stored
        statistics are read instead (``probe.ReusingScorer``)."""
        model = self.model_of(rnd)
        engines = self._engines_for(model.base)
        params = self.cfg.eval_sampling(seed=0)
        # The paper's KeptMass is measured against the *training* truncation set.
        train_params = self.cfg.train_sampling(seed=0)
        own = engines.scorer(model.adapter, params, train_params)
        if own is not None:
            return own
        # Here, not at the top: the probe imports torch (~1 s), and `ssd-tui check` imports
        # this module without needing it.
        from ssd_tui.analysis.probe import ReusingScorer

        stored = self._stored_probe_stats(params) if rnd == 0 and self.reuse_stored else {}
        return ReusingScorer(
            engines.tokenizer(),
            lambda: engines.scoring_model(model.adapter).model,
            params,
            train_params,
            stored,
        )

    def _stored_probe_stats(
        self, params: SamplingParams
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Round 0's samples at T_eval stored with the probe's extras, by (prompt, completion):
        only those drawn with the truncation the probe measures (``params``')."""
        by_id = {i: p for p in self.eval_problems if (i := self._ids["eval"].get(p.id))}
        out: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in self.store.probe_ready_samples(0, "eval", params.temperature):
            same = (r["top_k"], r["top_p"], r["min_p"]) == (
                params.top_k,
                params.top_p,
                params.min_p,
            )
            if same and r["problem_id"] in by_id:
                key = (self.render(by_id[r["problem_id"]]), r["completion"])
                out.setdefault(key, []).append(r)
        return out

    # ---- exact token statistics ---------------------------------------------------------
    def fill_token_stats(
        self,
        rnd: int,
        stage: str,
        purpose: str,
        temperature: float | None,
        model: RoundModel | str | None,
        problems: Sequence[Problem],
        extra_of: SamplingParams | None = None,
    ) -> int:
        """Exact statistics for the samples stored without them (vLLM's); returns how many
        were written.

        One teacher-forced pass of ``model`` (a round's, or an adapter on the run's model)
        over each sample's stored tokens (``probe.score_token_ids``, the probe's scoring
        code) gives log p, the entropy of the full distribution (T = 1) and the mass outside
        the sample's own truncation set, exactly as the transformers sampler records them
        while decoding; and, for the samples ``extra_of.wants_extra`` names (the stage's
        params), the probe's extras as the sampler would record them. Each batch is written
        in one transaction and only where the statistics are still missing, so a kill -9
        loses at most the batch in flight and a rerun scores only the rest.
        """
        ids = self._ids[purpose]
        by_pid = {ids[p.id]: p for p in problems if p.id in ids}
        todo = [
            r
            for r in self.store.samples_without_stats(rnd, purpose, temperature)
            if r["problem_id"] in by_pid
        ]
        if not todo:
            return 0
        # torch (see _scorer), only when there is something to score.
        from ssd_tui.analysis.probe import batches_by_tokens, score_token_ids

        m = self._as_model(model)
        scoring = self._engines_for(m.base).scoring_model(m.adapter)
        prompts: dict[int, list[int]] = {}
        for r in todo:
            pid = r["problem_id"]
            if pid not in prompts:
                prompts[pid] = encode_prompt(scoring.tokenizer, self.render(by_pid[pid]))
        # Same prompt and similar length side by side: little padding in a batch.
        todo.sort(key=lambda r: (len(prompts[r["problem_id"]]), len(r["token_ids"]), r["id"]))
        lengths = [len(prompts[r["problem_id"]]) + len(r["token_ids"]) for r in todo]
        extra = extra_of.extra_truncation if extra_of is not None else None
        total, done, written = len(todo), 0, 0
        t0 = time.monotonic()
        self._progress(rnd, stage, 0, total, "token statistics")
        for batch in batches_by_tokens(lengths, STATS_BATCH_TOKENS):
            self._check_stop()
            rows = [todo[i] for i in batch]
            for key, group in _by_params(rows, extra_of).items():
                wants = key[-1]
                stats = score_token_ids(
                    scoring.model,
                    [prompts[r["problem_id"]] for r in group],
                    [r["token_ids"] for r in group],
                    SamplingParams(*key[:-1]),
                    batch_size=len(group),
                    train_params=extra if wants else None,
                )
                written += self.store.set_token_stats(
                    [
                        (r["id"], st["logprobs"], st["entropies"], st["tail_mass"])
                        + ((st["top1"], st["train_tail_mass"]) if wants else ())
                        for r, st in zip(group, stats, strict=True)
                    ]
                )
            done += len(rows)
            self._progress(rnd, stage, done, total, "token statistics")
        # The pass's own line: its cost beside the sampling's (benchmarks/bench_round.py reads it).
        self.store.log(
            f"round {rnd}: exact token statistics of {written} {purpose} samples in "
            f"{time.monotonic() - t0:.0f}s",
            rnd=rnd,
            stage=stage,
        )
        return written

    # ---- shared work -------------------------------------------------------------------------
    def _generate(
        self,
        rnd: int,
        stage: str,
        purpose: str,
        problems: Sequence[Problem],
        params: SamplingParams,
        model: RoundModel | str | None,
        batch_size: int,
        label: str = "",
    ) -> None:
        """Sample `params.n` completions per problem from ``model`` (a round's, or an
        adapter on the run's model) in fixed batches, writing each batch whole."""
        ids = self._ids[purpose]
        m = self._as_model(model)
        engines = self._engines_for(m.base)
        self.store.note_engine(rnd, stage, self._engine_label())
        have = self.store.sample_keys(rnd, purpose, params.temperature)
        n = params.n
        total = len(problems) * n
        done = sum(1 for p in problems for j in range(n) if (ids[p.id], j) in have)
        detail = f"generating {label}".strip()
        self.rep.stage_start(rnd, stage, total, done)
        loading = done < total and not engines.holds_sampler(m.adapter)
        # Loading the model takes seconds: say so (the app shows it) until the first batch.
        self._progress(rnd, stage, done, total, f"loading model · {detail}" if loading else detail)
        style = self.cfg.model.prompt_style
        # A batch's seed comes from its place in the whole list, so a resumed stage redraws
        # exactly the batches a killed one lost.
        todo = [
            (problems[b : b + batch_size], b // batch_size)
            for b in range(0, len(problems), batch_size)
            if not all(
                (ids[p.id], j) in have for p in problems[b : b + batch_size] for j in range(n)
            )
        ]
        if todo:
            self._check_stop()
            sampler = engines.sampler(m.adapter)
            if loading:  # loaded: back to "generating" for the batches
                self._progress(rnd, stage, done, total, detail)
            starts, _ = engines.engine_starts()
            seed = self.cfg.run.seed
            work = [
                (
                    [self.render(p) for p in batch],
                    replace(params, seed=derive_seed(seed, rnd, purpose, params.temperature, k)),
                )
                for batch, k in todo
            ]
            with closing(generate_batches(sampler, work)) as stream:
                for i, outs in stream:
                    count, line = engines.engine_starts()
                    if count > starts:  # an engine start (vLLM's) is news
                        starts = count
                        self.store.log(f"round {rnd}: {line}", rnd=rnd, stage=stage)
                    done += self.store.add_samples(
                        [
                            self._sample_row(rnd, purpose, ids[p.id], j, params, p, c, style)
                            for p, comps in zip(todo[i][0], outs, strict=True)
                            for j, c in enumerate(comps)
                        ]
                    )
                    self._progress(rnd, stage, done, total, detail)
                    self._check_stop()
        # Engines that do not record every statistic exactly (vLLM): one pass fills them in.
        try:
            self.fill_token_stats(
                rnd, stage, purpose, params.temperature, m, problems, extra_of=params
            )
        finally:
            engines.release_scoring_model()

    @staticmethod
    def _sample_row(
        rnd: int,
        purpose: str,
        problem_id: int,
        j: int,
        params: SamplingParams,
        p: Problem,
        c: Completion,
        style: str,
    ) -> SampleRow:
        return SampleRow(
            rnd,
            purpose,
            problem_id,
            j,
            params.temperature,
            params.top_k,
            params.top_p,
            params.min_p,
            c.text,
            program_for(p, c.text, style) if purpose == "eval" else None,
            c.finish_reason,
            c.token_ids,
            c.logprobs,
            c.entropies,
            c.tail_mass,
            c.top1,
            c.extra_tail_mass,
        )

    def _with_probe_stats(self, rnd: int, params: SamplingParams) -> SamplingParams:
        """Round 0's samples at T_eval, the fork/lock probe's, record what it needs beside
        their own statistics (the top-1 probability and the training truncation's tail), so
        that round 0's probe reads them instead of scoring them again (docs/analysis.md).
        Only the samples the probe can take: it takes the first sample of each problem
        first, up to ``[analysis] probe_samples`` (0 = all)."""
        if rnd != 0 or params.temperature != self.cfg.eval.temperature:
            return params
        cap, n_problems = self.cfg.analysis.probe_samples, max(1, len(self.eval_problems))
        return replace(
            params,
            extra_truncation=self.cfg.train_sampling(seed=0),
            extra_samples=-(-cap // n_problems) if cap else None,
        )

    def _evaluate(self, rnd: int, stage: str, temperature: float, label: str = "") -> None:
        cfg = self.cfg
        if self._borrowed(rnd, stage, temperature):
            self._eval_metrics(rnd, temperature)
            return
        iso = self.isolation or choose_isolation(cfg.sandbox.isolation)
        self.store.note_sandbox(rnd, stage, iso.label)
        params = self._with_probe_stats(
            rnd, cfg.eval_sampling(seed=cfg.run.seed, temperature=temperature)
        )
        self._generate(
            rnd,
            stage,
            "eval",
            self.eval_problems,
            params,
            self.model_of(rnd),
            cfg.eval.batch_size,
            label,
        )
        ids = self._ids["eval"]
        by_pid = {ids[p.id]: p for p in self.eval_problems}
        todo = self.store.unjudged(rnd, temperature)
        total = self.store.count_samples(rnd, "eval", temperature)
        done = total - len(todo)
        detail = f"testing {label}".strip()
        self._progress(rnd, stage, done, total, detail)
        limits = Limits(
            timeout_s=cfg.eval.timeout_s,
            cpu_s=int(cfg.eval.timeout_s) + 1,
            memory_mb=cfg.eval.memory_mb,
        )
        workers = cfg.eval.workers or os.cpu_count() or 1
        hide = self._unseen()
        for i in range(0, len(todo), VERDICT_BATCH):
            self._check_stop()
            chunk = todo[i : i + VERDICT_BATCH]
            items = [(by_pid[r["problem_id"]], r["code"] or "") for r in chunk]
            # Flagged, never failed: the verdict is the tests' (suspect.py); ~0.1 ms a program.
            verdicts = [
                (
                    chunk[j]["id"],
                    v.status,
                    v.message,
                    v.duration_s,
                    ",".join(suspect_reasons(chunk[j]["code"])) or None,
                )
                for j, v in check_samples(items, limits, workers, iso=iso, hide=hide)
            ]
            self.store.add_verdicts(verdicts)
            done += len(verdicts)
            self._progress(rnd, stage, done, total, detail)
        self._eval_metrics(rnd, temperature)

    def _eval_metrics(self, rnd: int, temperature: float) -> None:
        """pass@k by difficulty and the sample count of a round's judged samples at one T."""
        counts = self.store.pass_counts(rnd, temperature)
        metrics = summarize(counts, self.cfg.eval.k)
        metrics.setdefault("all", {})["samples"] = float(sum(n for _, _, n, _ in counts))
        self.store.set_metrics(rnd, "eval", temperature, metrics)

    def _borrowed(self, rnd: int, stage: str, temperature: float) -> bool:
        """Round 0's evaluation at ``temperature`` copied from ``self.source`` (a sweep's
        shared round 0, a branch's parent's round K) when it is the same evaluation
        (runs/reuse.py); False, with the reason logged, when it is evaluated here."""
        src = self.source
        if src is None or rnd != 0 or self.store.count_samples(rnd, "eval", temperature):
            return False  # nothing to borrow, or a stage begun here goes on here
        n, why, recorded = borrow(
            self.store,
            self.cfg,
            rnd,
            stage,
            temperature,
            src,
            self._engine_label(),
            self._ids["eval"],
        )
        where = f"{src.db.parent} round {src.round}"
        if not n:
            self.store.log(
                f"round {rnd}: {stage} at T={temperature:g} evaluated here, not taken from "
                f"{where}: {why}",
                rnd=rnd,
                stage=stage,
            )
            return False
        self.store.note_engine(rnd, stage, self._engine_label())
        line = (
            f"round {rnd}: {stage} at T={temperature:g} reused from {recorded['name']} "
            f"({where}): {n} samples with their verdicts (same model, problems, seed and "
            "evaluation settings)"
        )
        self.store.log(line, rnd=rnd, stage=stage)
        self.rep.message(line)
        return True

    def _unseen(self) -> list[str]:
        """What the test programs must not read even where the sandbox shows the folder it
        lies in (a package's data): the run's folder and its problem files."""
        paths = [str(self.store.path.parent)]
        for source in {p.source for p in (*self.eval_problems, *self.train_problems)}:
            if source == LEETCODE:
                paths.append(str(leetcode_source()))
            elif source and source != HUMANEVAL:  # HumanEval's file is never shown
                paths.append(source)
        return paths

    # ---- summaries -------------------------------------------------------------------------
    def round_summary(self, rnd: int) -> dict[str, Any]:
        t = self.cfg.eval.temperature
        out: dict[str, Any] = {"round": rnd}
        for k in self.cfg.eval.k:
            out[f"pass@{k}"] = self.store.metric(rnd, f"pass@{k}", "eval", t)
        out["train samples"] = self.store.count_samples(rnd, "train")
        out["eval samples"] = self.store.count_samples(rnd, "eval", t)
        out["seconds"] = {s["stage"]: s["seconds"] for s in self.store.stages(rnd)}
        return out


def filter_examples(examples: Sequence[Example], min_lines: int = 2) -> list[Example]:
    """Drop empty completions and single-line stubs (fewer than ``min_lines`` non-blank lines).

    The only filter SSD applies: there is no correctness signal.
    """
    return [e for e in examples if _trainable(e[1], min_lines)]


def _trainable(completion: str, min_lines: int) -> bool:
    lines = [ln for ln in completion.splitlines() if ln.strip()]
    return bool(completion.strip()) and len(lines) >= min_lines


def _by_params(
    rows: Sequence[dict[str, Any]], extra_of: SamplingParams | None = None
) -> dict[tuple, list[dict[str, Any]]]:
    """Rows grouped by their truncation settings (temperature, top_k, top_p, min_p) and
    whether they get the extra statistics (``extra_of.wants_extra`` of their sample index)."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        wants = extra_of is not None and extra_of.wants_extra(r["sample_idx"])
        key = (r["temperature"], r["top_k"], r["top_p"], r["min_p"], wants)
        out.setdefault(key, []).append(r)
    return out


def install_signal_handlers(pipe: Pipeline) -> None:
    """SIGINT/SIGTERM: stop between batches (a second one kills). SIGUSR1: pause after this stage."""

    def on_stop(signum, frame):
        if pipe.stop_now:
            raise KeyboardInterrupt
        pipe.stop_now = True
        pipe.rep.message("stopping after the current batch… (press Ctrl-C again to abort now)")

    def on_pause(signum, frame):
        pipe.stop_after_stage = True
        pipe.rep.message("pausing after the current stage…")

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGUSR1, on_pause)
