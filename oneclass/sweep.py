"""``oneclass sweep``: a recipe's grid x seeds, one run folder each, run by submitit.

A grid is ``--grid KEY=V1,V2`` items (any recipe key, values as ``--set`` reads them);
every combination of their values, each with seeds S, S+1, ..., S+R-1, is one run of
``oneclass train`` in ``OUT/<key=value,...>/seed-<s>/``. The sweep writes nothing of its
own but ``OUT/sweep.json`` (the recipe, its hash and the grids run so far) and one log
folder per run beside it (``seed-<s>.log/``: submitit's stdout and stderr).

Runs already complete are skipped and unfinished ones (a ``.partial`` folder with a
checkpoint) are resumed, so the same command finishes an interrupted or partly failed
sweep. Executors are submitit's: local processes, ``jobs`` at a time (each on its own GPU
where there are GPUs, with the CPU cores shared out otherwise), or Slurm job arrays.
Nothing here schedules: submitit starts, watches and collects the jobs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import time
from collections import Counter
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote


from oneclass import recipe as recipes
from oneclass.artifacts import CHECKPOINT, PARTIAL, RUN_FORMAT, folder_kind, write_text
from oneclass.errors import OneclassError

SWEEP_FILE = "sweep.json"
LOCAL_TIMEOUT_MIN = 60 * 24 * 30  # submitit's local jobs stop after 2 minutes unless told


@dataclass
class Run:
    point: dict[str, str]  # grid key -> the value as written
    seed: int
    folder: Path

    @property
    def name(self) -> str:
        return f"{self.folder.parent.name}/{self.folder.name}"

    @property
    def log(self) -> Path:
        return self.folder.with_name(self.folder.name + ".log")


@dataclass
class Outcome:
    done: list[Run] = field(default_factory=list)  # trained now
    skipped: list[Run] = field(default_factory=list)  # complete before
    failed: list[tuple[Run, str]] = field(default_factory=list)  # with the reason and the log


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``KEY=V1,V2`` items → {key: [values]}; commas inside brackets or quotes belong
    to a value (``method.scales=[448,224],[224]``)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise OneclassError(f"--grid {item!r}: expected section.key=value1,value2,...")
        if key in grid:
            raise OneclassError(f"--grid {key}: given twice; list its values in one --grid")
        if key == "seed":
            raise OneclassError("--grid seed: seeds are --seed (the first) and --repeats (how many)")
        values = _split_values(raw)
        if not values or any(not v.strip() for v in values):
            raise OneclassError(f"--grid {item!r}: an empty value (expected section.key=value1,value2,...)")
        twice = sorted(v for v, n in Counter(v.strip() for v in values).items() if n > 1)
        if twice:
            raise OneclassError(f"--grid {key}: {', '.join(twice)} given twice (one run folder per value)")
        grid[key] = values
    return grid


def _split_values(raw: str) -> list[str]:
    values, depth, quote_char, start = [], 0, None, 0
    for i, char in enumerate(raw):
        if quote_char:
            quote_char = None if char == quote_char else quote_char
        elif char in "'\"":
            quote_char = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(raw[start:i])
            start = i + 1
    values.append(raw[start:])
    return [] if raw == "" else values


def point_config(recipe: Path, sets: list[str], point: dict[str, str], seed: int | None = None) -> recipes.Recipe:
    """The recipe with ``--set`` items, then the grid point's values; errors name the
    ``--grid`` item."""
    values, flags = {}, {}
    for key, raw in point.items():
        values[key] = recipes.parse_value(raw)
        flags[key] = f"--grid {key}={raw!r}"
    config = recipes.load(recipe, sets, values, flags)
    if seed is not None:
        config.seed = seed
    return config


def recipe_hash(config: recipes.Recipe) -> str:
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan(recipe: Path, sets: list[str], grid: dict[str, list[str]], repeats: int, out: Path,
         seed: int | None = None) -> tuple[list[Run], str]:
    """Every run of the sweep, each point's recipe checked (before anything is written),
    and the hash of the recipe without the grid."""
    base = recipes.load(recipe, sets)
    first = base.seed if seed is None else seed
    recipes.check_seeds(first, repeats, "--seed" if seed is not None else f"{recipe}: seed")
    _check_grid_against_sets(grid, sets, base.method.name)
    runs = []
    for combination in itertools.product(*grid.values()) if grid else [()]:
        point = dict(zip(grid, combination))
        point_config(recipe, sets, point)  # a bad key or value: refused now, naming --grid
        name = ",".join(f"{k}={quote(v.strip(), safe='=,.:+-_[]{}')}" for k, v in point.items()) or "base"
        runs += [Run(point, first + r, out / name / f"seed-{first + r}") for r in range(repeats)]
    return runs, recipe_hash(base)


def _setting(key: str, method: str) -> str:
    """A key as the setting it names: method.NAME.K and method.K are one for method NAME."""
    return "method." + key.removeprefix(f"method.{method}.") if key.startswith(f"method.{method}.") else key


def set_twice(keys, sets: list[str], method: str) -> tuple[str, str] | None:
    """(a key of ``keys``, the --set item that names its setting too), or None: a grid's
    values would override the --set one without a word."""
    given = {_setting(item.split("=", 1)[0].strip(), method): item for item in sets}
    return next(((key, given[_setting(key, method)]) for key in keys if _setting(key, method) in given), None)


def _check_grid_against_sets(grid: dict[str, list[str]], sets: list[str], method: str) -> None:
    """A grid key also given by --set would override it silently (the grid's values win);
    two values of one key that parse alike (1e-3, 0.001) would train one model twice."""
    clash = set_twice(grid, sets, method)
    if clash:
        raise OneclassError(f"--grid {clash[0]}: also set by --set {clash[1]!r}; drop one")
    for key, values in grid.items():
        parsed = [json.dumps(recipes.parse_value(v), sort_keys=True, default=str) for v in values]
        twice = [v for v, text in zip(values, parsed) if parsed.count(text) > 1]
        if twice:
            raise OneclassError(f"--grid {key}: {', '.join(v.strip() for v in twice)} are one value "
                                f"(one run folder per value)")
    settings = [_setting(key, method) for key in grid]
    same = sorted({k for k in settings if settings.count(k) > 1})
    if same:
        keys = [key for key in grid if _setting(key, method) in same]
        raise OneclassError(f"--grid {keys[0]}: names the setting {keys[1]} names too; give one")


def check_folder(out: Path, digest: str) -> None:
    """A sweep folder holds one recipe's runs: refuse another's, naming both hashes."""
    if out.exists() and not out.is_dir():
        raise OneclassError(f"{out}: not a folder")
    record = out / SWEEP_FILE
    if not record.is_file():
        if out.is_dir() and any(entry.name != LOCK_FILE for entry in out.iterdir()):
            raise OneclassError(f"{out}: not empty and not a sweep folder (no {SWEEP_FILE}); choose another --out")
        return
    try:
        saved = json.loads(record.read_text())
        saved_hash = saved["recipe_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        raise OneclassError(f"{record}: damaged; cannot tell which recipe the sweep ran") from None
    if saved_hash != digest:
        raise OneclassError(f"{out}: holds a sweep of another recipe (hash {saved_hash}, {saved.get('recipe')}); "
                            f"this one's hash is {digest}: choose another --out")


def write_record(out: Path, recipe: Path, digest: str, grid: dict[str, list[str]], repeats: int) -> None:
    record = out / SWEEP_FILE
    grids = json.loads(record.read_text()).get("grids", []) if record.is_file() else []
    entry = {"grid": grid, "repeats": repeats}
    if entry not in grids:
        grids.append(entry)
    out.mkdir(parents=True, exist_ok=True)
    write_text(record, json.dumps({"recipe": str(recipe), "recipe_hash": digest, "grids": grids}, indent=2) + "\n")


def is_complete(run: Run) -> bool:
    """A finished run of this oneclass's format (an older one is trained again, as
    evaluate would refuse it)."""
    if not (run.folder / "metrics.json").is_file() or folder_kind(run.folder) != "run":
        return False
    try:
        return json.loads((run.folder / "env.json").read_text()).get("run_format") == RUN_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def train_one(recipe: str, sets: list[str], point: dict[str, str], seed: int, folder: str, threads: int) -> str:
    """One run, in the job's process: resumed where a checkpoint or a finished selection is, else from the start
    (replacing an unfinished run of ours)."""
    import torch

    from oneclass.select import SELECT_FILE, SELECT_PROGRESS
    from oneclass.training import train_run

    if threads:
        torch.set_num_threads(threads)
    config = point_config(Path(recipe), sets, point, seed)
    target = Path(folder)
    partial = target.with_name(target.name + PARTIAL)
    # what --resume takes: a checkpoint, or a hyperparameter selection, finished (select.json)
    # or begun (its finished fits), which restarting would throw away
    resume = (partial / "recipe.yaml").is_file() and any(
        (partial / name).is_file() for name in (CHECKPOINT, SELECT_FILE, SELECT_PROGRESS))
    return str(train_run(config, target, resume=resume, overwrite=not resume))


def _submitit():
    """submitit, its log lines on stderr only: stdout lists the sweep's run folders."""
    import logging
    import sys

    import submitit

    logger = logging.getLogger("submitit")
    for handler in list(logger.handlers):
        if getattr(handler, "stream", None) is sys.stdout:
            logger.removeHandler(handler)
    return submitit


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: a CPU machine
        return 0


def run_local(todo: list[Run], recipe: Path, sets: list[str], jobs: int,
              report: Callable[[str], None]) -> list[tuple[Run, str]]:
    """``todo`` as local processes, ``jobs`` at a time; the failures with their reasons."""
    submitit = _submitit()
    gpus = list(range(gpu_count()))
    threads = 0 if gpus else max(1, (os.cpu_count() or 1) // jobs)
    free = list(gpus)
    running: list[tuple[Run, Any, int | None]] = []
    failed: list[tuple[Run, str]] = []
    queue = list(todo)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                run = queue.pop(0)
                executor = submitit.LocalExecutor(folder=run.log)
                gpu = free.pop(0) if free else None
                executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, **(
                    {"visible_gpus": [gpu], "gpus_per_node": 1} if gpu is not None else {}))
                job = executor.submit(train_one, str(recipe), sets, run.point, run.seed, str(run.folder), threads)
                running.append((run, job, gpu))
                report(f"started {run.name} (log {run.log})")
            time.sleep(0.5)
            for entry in [e for e in running if e[1].done()]:
                running.remove(entry)
                run, job, gpu = entry
                if gpu is not None:
                    free.append(gpu)
                failed += _collect(run, job, report)
    except KeyboardInterrupt:
        _stop([job for _, job, _ in running])
        raise
    return failed


def _stop(jobs: list, patience_s: float = 60) -> None:
    """Ctrl-C: the running jobs are interrupted (each keeps its checkpoint, as `oneclass
    train` does) and waited for, a minute at most."""
    for job in jobs:
        with suppress(Exception):
            job.cancel(check=False)
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline and not all(job.done() for job in jobs):
        time.sleep(0.5)


def run_slurm(todo: list[Run], recipe: Path, sets: list[str], out: Path, slurm: dict[str, str],
              report: Callable[[str], None]) -> list[tuple[Run, str]]:
    """``todo`` as one Slurm job array (submitit's), waited for; the failures."""
    submitit = _submitit()
    executor = submitit.AutoExecutor(folder=out / ".slurm" / "%j", cluster="slurm")  # %j: array_task
    executor.update_parameters(**slurm_parameters(slurm))
    with executor.batch():
        jobs = [executor.submit(train_one, str(recipe), sets, run.point, run.seed, str(run.folder), 0)
                for run in todo]
    report(f"submitted {len(jobs)} runs as Slurm job array {jobs[0].job_id.split('_')[0]}")  # todo is never empty
    failed = []
    try:
        for run, job in zip(todo, jobs):
            while not job.done():
                time.sleep(5)
            failed += _collect(run, job, report)
            _link_log(run, job)
    except KeyboardInterrupt:  # the array would go on running, and the same command submit it again
        _stop(jobs, patience_s=10)
        raise
    return failed


# --slurm key -> submitit parameter: the few a sweep needs named plainly, any other slurm_* passed on
SLURM_KEYS = {"partition": "slurm_partition", "time": "timeout_min", "gpus_per_task": "slurm_gpus_per_task",
              "cpus_per_task": "cpus_per_task", "mem": "slurm_mem", "array_parallelism": "slurm_array_parallelism",
              "account": "slurm_account", "qos": "slurm_qos", "constraint": "slurm_constraint"}


def slurm_parameters(items: dict[str, str]) -> dict[str, Any]:
    parameters: dict[str, Any] = {"timeout_min": 60}
    for key, value in items.items():
        name = SLURM_KEYS.get(key)
        if name is None:
            raise OneclassError(f"--slurm {key}: unknown; expected one of: {', '.join(SLURM_KEYS)}")
        parameters[name] = _minutes(value) if name == "timeout_min" else int(value) if value.isdigit() else value
    return parameters


def _minutes(value: str) -> int:
    """Slurm's time forms: minutes, [D-]HH:MM[:SS], MM:SS, D-HH."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if match is None:
        raise OneclassError(f"--slurm time={value}: expected minutes or [days-]hours:minutes[:seconds]")
    days, first, second, third = (int(g) if g else None for g in match.groups())
    if days is None and second is None:
        return first  # minutes
    if days is not None and second is None:
        return days * 1440 + first * 60  # D-HH
    if days is None and third is None:
        return first + (1 if second else 0)  # MM:SS, rounded up to a whole minute
    return (days or 0) * 1440 + first * 60 + second + (1 if third else 0)


def parse_slurm(items: list[str]) -> dict[str, str]:
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise OneclassError(f"--slurm {item!r}: expected key=value (e.g. partition=gpu)")
        parsed[key.strip()] = value.strip()
    slurm_parameters(parsed)  # unknown keys refused before anything is written
    return parsed


def check_slurm() -> None:
    """Slurm reachable: sbatch on PATH and squeue answering, else one line."""
    import subprocess

    if shutil.which("sbatch") is None:
        raise OneclassError("--executor slurm: Slurm is not reachable from here (no sbatch on PATH)")
    try:
        subprocess.run(["squeue", "--me", "--noheader"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise OneclassError(f"--executor slurm: Slurm is not reachable from here (squeue failed: {exc})") from None


def _collect(run: Run, job, report: Callable[[str], None]) -> list[tuple[Run, str]]:
    try:
        job.result()
    except Exception as exc:  # noqa: BLE001 - a run's failure is reported, the others go on
        reason = _first_line(exc)
        report(f"failed  {run.name}: {reason} (log {job.paths.stderr})")
        return [(run, f"{reason} (log {job.paths.stderr})")]
    report(f"done    {run.name}")
    return []


def _link_log(run: Run, job) -> None:
    """The Slurm task's log beside its run, as the local runs have theirs."""
    with suppress(OSError):
        run.log.mkdir(exist_ok=True)
        for path in (job.paths.stdout, job.paths.stderr):
            if path.is_file() and not (run.log / path.name).exists():
                (run.log / path.name).symlink_to(path.resolve())


def _first_line(exc: BaseException) -> str:
    # submitit wraps a job's exception in a FailedJobError whose text is the job's traceback
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("oneclass.errors.", "OneclassError", "RecipeError"))]
    if errors:
        return errors[-1].split(": ", 1)[-1]
    return lines[-1] if lines else type(exc).__name__


def sweep(recipe: Path, grid_items: list[str], sets: list[str], repeats: int, out: Path,
          executor: str = "local", jobs: int | None = None, slurm_items: list[str] | None = None,
          seed: int | None = None, report: Callable[[str], None] = lambda line: None) -> tuple[Outcome, list[Path]]:
    """Run the sweep; returns what happened and every complete run folder of it."""
    if executor not in ("local", "slurm"):
        raise OneclassError(f"--executor: expected local or slurm, got {executor!r}")
    if jobs is not None and jobs < 1:
        raise OneclassError(f"--jobs: must be >= 1, got {jobs}")
    grid = parse_grid(grid_items)
    slurm = parse_slurm(slurm_items or [])
    runs, digest = plan(recipe, sets, grid, repeats, out, seed)
    check_folder(out, digest)
    if executor == "slurm":
        check_slurm()
    elif jobs is not None and 0 < (gpus := gpu_count()) < jobs and recipes.load(recipe, sets).train.device != "cpu":
        # the jobs left without a GPU would train on the CPU
        raise OneclassError(f"--jobs {jobs}: this machine has {gpus} GPU(s), one a job; give at most "
                            f"{gpus} (CUDA_VISIBLE_DEVICES= hides them to train every job on the CPU)")
    outcome = Outcome()
    todo = []
    for run in runs:
        (outcome.skipped if is_complete(run) else todo).append(run)
    if outcome.skipped:
        report(f"{len(outcome.skipped)} of {len(runs)} runs already complete: skipped")
    out.mkdir(parents=True, exist_ok=True)
    with _only_sweep(out):
        write_record(out, recipe, digest, grid, repeats)
        if todo:
            if executor == "local":
                failed = run_local(todo, recipe, sets, jobs or max(1, gpu_count()), report)
            else:
                failed = run_slurm(todo, recipe, sets, out, slurm, report)
            outcome.failed = failed
            outcome.done = [run for run in todo if run not in [f for f, _ in failed]]
    return outcome, [run.folder for run in runs if is_complete(run)]


LOCK_FILE = ".sweep.lock"


@contextmanager
def _only_sweep(out: Path):
    """Hold OUT's sweep lock (an advisory flock, released when the process ends, however
    it ends): a second sweep started on OUT would take the unfinished runs of the first
    for its own to replace, and delete the folders the first is writing into."""
    try:
        import fcntl
    except ImportError:  # no flock here (Windows): unguarded
        yield
        return
    with open(out / LOCK_FILE, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OneclassError(f"{out}: another sweep is running in it; wait for it to end, or choose "
                                f"another --out") from None
        except OSError:  # e.g. a file system without locks: unguarded
            pass
        yield
