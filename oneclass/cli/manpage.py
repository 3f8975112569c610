"""The CLI's reference text, and the man pages generated from the CLI, so they cannot drift.

One source: what each command's ``--help`` shows below its options (examples, exit
status, environment, files) lives once, in EXAMPLES, EXIT_STATUS, ENVIRONMENT and FILES
below. ``epilog(path)`` renders it as the command's typer epilog (attached in
oneclass/cli/main.py and oneclass/cli/listing.py); ``pages()`` renders the same entries
as the man pages' EXAMPLES, EXIT STATUS, ENVIRONMENT and FILES sections. NAME,
SYNOPSIS, DESCRIPTION, ARGUMENTS, OPTIONS and COMMANDS come from the typer commands
themselves: their docstrings and the very help records ``--help`` prints.

    python -m oneclass.cli.manpage man/      # writes man/oneclass.1, man/oneclass-<cmd>.1

Keep the entries ASCII (groff without preconv garbles the rest) and each example command
on one line of at most 74 characters (``--help`` prints it unwrapped, indented by 2).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import typer

from oneclass import __version__

# -- the reference text: one entry per command path ----------------------------------

# (command line, what it does); the commands run from the repository root, where
# recipes/ lies and the recipes' ../shared/data roots resolve
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "oneclass": [
        ("oneclass train recipes/demo.yaml --out demo-run --overwrite",
         "Train Deep SAD on the bundled synthetic example (no downloads); prints demo-run."),
        ("oneclass evaluate demo-run",
         "Its test AUROC, AUPRC and thresholds, as tables on stderr."),
        ("oneclass tsne demo-run",
         "A t-SNE map of its latent space: demo-run/tsne-test.png and .json."),
        ("oneclass list methods",
         "The methods a recipe's method.name may name."),
    ],
    "oneclass extract-patches": [
        ("oneclass extract-patches recipes/demo.yaml --out demo-store --overwrite",
         "Cut the bundled synthetic example as recipes/demo.yaml says."),
        ("oneclass extract-patches recipes/nanofibre.yaml --stride 64 -o nano-s64",
         "The nanofibre images (../shared/data/nanofibre), on a coarser grid than the recipe's."),
        ("oneclass extract-patches recipes/mnist.yaml -o mnist-store -j 2",
         "MNIST's digits as whole 32 x 32 images, with two worker processes."),
        ("oneclass extract-patches --whole-image --resize 64 -o synth-images",
         "No recipe: the synthetic dataset, one 64 x 64 item per image."),
    ],
    "oneclass train": [
        ("oneclass train recipes/demo.yaml --out demo-run --overwrite",
         "Deep SAD on the bundled synthetic example (no downloads); prints demo-run."),
        ("run=$(oneclass train recipes/nanofibre.yaml -r 5 --ensemble)",
         "c-ss-ms-gVAE on the nanofibre images, one model of five seeds' members on one split "
         "(steadier than one seed); the run folder's path lands in $run."),
        ("oneclass train recipes/folder.yaml --set dataset.root=my-images",
         "Your own images, one item per image: my-images/normal/ and my-images/anomalous/TYPE/."),
        ("oneclass train recipes/demo.yaml --out demo-run --resume",
         "Go on with a run stopped by Ctrl-C, from its last checkpoint."),
        ("torchrun --nproc_per_node=4 -m oneclass train recipes/mvtec-leather.yaml",
         "One run trained data-parallel on 4 GPUs of this machine (gloo processes on a CPU)."),
    ],
    "oneclass score": [
        ("oneclass score demo-run demo-store > scores.csv",
         "Every patch of a store cut as the run's recipe says; its labels come along."),
        ("oneclass score \"$run\" ../shared/data/nanofibre/Normal -o normal.csv",
         "Images, scored by the nanofibre run of oneclass train's examples ($run), cut with "
         "the run's size, stride and resize; label and subclass stay empty."),
        ("find ../shared/data/nanofibre/Normal -type f | oneclass score \"$run\" -",
         "Image paths on standard input, one per line."),
        ("oneclass score demo-run demo-store -f jsonl | oneclass evaluate -",
         "Score and evaluate in one pipeline."),
    ],
    "oneclass sweep": [
        ("oneclass sweep recipes/demo.yaml -g split.gamma=0,0.2 -r 3 -o sweeps/g",
         "Two gammas x three seeds, one local run at a time; run it again to finish what failed."),
        ("oneclass sweep recipes/demo.yaml -g method.name=deep-sad,ss-dcae -j 2 -o m",
         "Two methods, two local runs at a time (each on its own GPU where there are GPUs)."),
        ("oneclass sweep recipes/busi.yaml -g split.gamma=0,0.2 -r 20 -o b -e slurm",
         "The grid as a Slurm job array through submitit (--slurm partition=gpu etc.)."),
    ],
    "oneclass evaluate": [
        ("oneclass evaluate demo-run",
         "Test AUROC, AUPRC, both thresholds and their confusion counts, on stderr."),
        ("oneclass evaluate runs/g0/seed-* --format csv > results.csv",
         "Several runs: one CSV row each on stdout, mean and std per group on stderr."),
        ("oneclass evaluate runs/*/seed-* --plot auc-vs-gamma.png -q",
         "Test AUROC against gamma, per method, drawn from run folders."),
        ("oneclass evaluate scores.csv --format json",
         "A score table (from oneclass score); JSON on stdout."),
    ],
    "oneclass tsne": [
        ("oneclass tsne demo-run",
         "demo-run/tsne-test.png, and demo-run/tsne-test.json with the silhouette score."),
        ("oneclass tsne demo-run --split val --perplexity 10 -o val-map.png",
         "The validation set; val-map.json beside it."),
        ("oneclass tsne demo-run --max-points 1000 --device cpu",
         "A quicker map of 1000 points drawn at random (--seed 0), on the CPU."),
    ],
    "oneclass explain": [
        ("oneclass explain demo-run demo-store --out demo-maps",
         "The 20 most anomalous patches of a store, each beside its map: demo-maps/*.png."),
        ("oneclass explain \"$run\" scan.png --out maps --top 0",
         "Every patch of one image, cut as the run's recipe says."),
    ],
    "oneclass list": [
        ("oneclass list datasets",
         "The dataset plugins a recipe's dataset.name may name."),
        ("oneclass list methods --verbose",
         "The method plugins, with their parameters (method.KEY)."),
    ],
    "oneclass list datasets": [
        ("oneclass list datasets",
         "One line per plugin: name and description ([origin] for add-ons)."),
        ("oneclass list datasets --verbose",
         "Also each dataset's folder layout and options (dataset.KEY)."),
    ],
    "oneclass list methods": [
        ("oneclass list methods",
         "One line per plugin: name and description ([origin] for add-ons)."),
        ("oneclass list methods -v",
         "Also each method's parameters (method.KEY), supervision and validation use."),
    ],
}

# oneclass.errors holds the codes; train's Ctrl-C handler (oneclass/cli/train.py) the 130 line
EXIT_STATUS: list[tuple[str, str]] = [
    ("0", "Done."),
    ("1", "A file could not be written: a full disk, a read-only place or a missing "
          "permission. One line names it; no temporary files are left."),
    ("2", "Bad input: a recipe key, flag, file or data the command refuses. One line "
          "names it; nothing is written."),
    ("130", "Interrupted by Ctrl-C."),
]
# train keeps what can be resumed (oneclass/training.py, oneclass/cli/train.py)
_TRAIN_EXIT = {
    "1": "A file could not be written: a full disk, a read-only place or a missing permission. "
         "One line names it; train keeps an unfinished run that has a checkpoint in OUT.partial, "
         "to resume once the place is fixed.",
    "130": "Interrupted by Ctrl-C. train then names its checkpoint and the exact command that "
           "resumes the run (oneclass train ... --resume), or says that nothing was kept.",
}

# oneclass/stores.py (cache_dir), oneclass/methods/nets/backbones.py (torch.hub.get_dir),
# oneclass/engine.py (resolve_device, deterministic_mode)
ENVIRONMENT: dict[str, str] = {
    "ONECLASS_CACHE": "Where train caches the patch stores it cuts from recipes, in its stores/ "
                      "folder; default $XDG_CACHE_HOME/oneclass, or ~/.cache/oneclass.",
    "XDG_CACHE_HOME": "The base of the default ONECLASS_CACHE and, without TORCH_HOME, of "
                      "torch's cache; default ~/.cache.",
    "TORCH_HOME": "Where ImageNet weights of pretrained backbones (weights: imagenet) are "
                  "downloaded once, in hub/checkpoints; default $XDG_CACHE_HOME/torch, or "
                  "~/.cache/torch.",
    "CUDA_VISIBLE_DEVICES": "The GPUs torch may use: --device auto (train.device: auto) takes "
                            "CUDA when one is visible, cuda:N counts the visible ones; empty "
                            "means the CPU.",
    "WORLD_SIZE": "Set by torchrun (with RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT): above "
                  "1, train is one rank of a data-parallel run, on the GPU of its LOCAL_RANK.",
    "CUBLAS_WORKSPACE_CONFIG": "Set to :4096:8, unless already set, where the recipe's "
                               "train.deterministic asks for torch's deterministic "
                               "algorithms (CUDA needs it).",
}
_EXTRACT_CACHE = ("Not read: extract-patches writes only --out. train cuts and caches its own "
                  "store under $ONECLASS_CACHE/stores; give it --store OUT to train on this one.")

ENVIRONMENT_OF: dict[str, list[tuple[str, str]]] = {
    "oneclass": [(name, text) for name, text in ENVIRONMENT.items()],
    "oneclass extract-patches": [("ONECLASS_CACHE", _EXTRACT_CACHE)],
    "oneclass train": [(name, ENVIRONMENT[name]) for name in
                       ("ONECLASS_CACHE", "XDG_CACHE_HOME", "TORCH_HOME", "CUDA_VISIBLE_DEVICES",
                        "WORLD_SIZE", "CUBLAS_WORKSPACE_CONFIG")],
    "oneclass score": [(name, ENVIRONMENT[name]) for name in
                       ("CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG")],
    "oneclass tsne": [(name, ENVIRONMENT[name]) for name in
                      ("CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG")],
    "oneclass explain": [(name, ENVIRONMENT[name]) for name in
                         ("CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG")],
    "oneclass sweep": [(name, ENVIRONMENT[name]) for name in ("ONECLASS_CACHE", "CUDA_VISIBLE_DEVICES")],
}

# oneclass/data/store.py, oneclass/artifacts.py, oneclass/training.py, oneclass/stores.py
FILES: dict[str, list[tuple[str, str]]] = {
    "oneclass": [
        ("STORE/", "A patch store (extract-patches, or cached by train): images.npy, masks.npy, "
                   "index.csv, meta.json and the .oneclass marker."),
        ("RUN/", "A run folder (train): recipe.yaml, env.json, data.json, model.pt, log.jsonl, "
                 "scores/*.csv, metrics.json and the .oneclass marker."),
        (".oneclass", "The marker of a folder oneclass wrote: --overwrite replaces only such "
                      "folders, of the same kind, and only once the new one is complete."),
        ("$ONECLASS_CACHE/stores/", "The patch stores train cut from recipes."),
    ],
    "oneclass sweep": [
        ("OUT/sweep.json", "The recipe, its hash and the grids run: a sweep folder holds one recipe's runs."),
        ("OUT/KEY=VALUE,.../seed-S/", "A run folder (see oneclass train) per grid point and seed."),
        ("OUT/KEY=VALUE,.../seed-S.log/", "The run's job log: submitit's stdout and stderr files."),
    ],
    "oneclass extract-patches": [
        ("OUT/", "The patch store, built as .OUT.tmp-PID beside it and renamed when complete; "
                 "its path is printed on stdout."),
        ("OUT/images.npy", "(N, C, H, W) uint8 patches, memory-mappable."),
        ("OUT/masks.npy", "(N, H, W) uint8 patch masks in {0, 1}, at output size."),
        ("OUT/index.csv", "id,source,x,y,label,anomaly_frac,subclass; label 1 = anomalous; "
                          "x, y at the extraction level."),
        ("OUT/meta.json", "Every extraction parameter, the dataset plugin and its options, each "
                          "source file's size and SHA-256, the counts, the toolkit version."),
        ("OUT/.oneclass", "The marker: --overwrite replaces only a store carrying it."),
    ],
    "oneclass train": [
        ("$ONECLASS_CACHE/stores/", "The recipe's patch store, cut on first use and reused while "
                                    "the dataset, its options, the extraction parameters and "
                                    "the source files (path, size, time) are the same; --store "
                                    "DIR reads DIR instead."),
        ("OUT/", "The run folder: --out, runs/RECIPE-METHOD-gammaG-seedS by default "
                 "(-ensembleR with --ensemble), or OUT/seed-S per seed with --repeats. It holds:"),
        ("OUT/recipe.yaml", "The resolved recipe, --set and flags applied."),
        ("OUT/env.json", "Versions, the device and its name, the git commit."),
        ("OUT/data.json", "The store's path and hash, the split's members and counts."),
        ("OUT/model.pt", "The learned state (score and tsne load it with weights_only)."),
        ("OUT/log.jsonl", "One line per epoch: loss, lr, seconds, patches/s, validation AUROC."),
        ("OUT/scores/val.csv, OUT/scores/test.csv",
         "id,source,x,y,label,subclass,score, one row per item; higher = more anomalous."),
        ("OUT/scores/val_images.csv, OUT/scores/test_images.csv",
         "Patch runs only: source,label,subclass,patches,score, one row per source image, "
         "its patch scores aggregated by evaluate.image_score."),
        ("OUT/metrics.json", "Test and validation metrics."),
        ("OUT/maps/test.npy", "Anomaly maps of the test items, for methods that draw them."),
        ("OUT/select.json", "With a select: section: every grid point's metric on each held-out "
                            "validation fold, their mean and std, and the chosen point."),
        ("OUT/.oneclass", "The marker: --overwrite replaces only a run folder carrying it."),
        ("OUT.partial/", "The run while it is built, renamed to OUT when complete; its "
                         "checkpoint.pt, written after every epoch, is what --resume continues."),
    ],
    "oneclass score": [
        ("RUN/", "A complete run folder; its recipe.yaml, data.json (extraction parameters, "
                 "patch shape) and model.pt are read."),
        ("stdout, or --output FILE", "The score table: id,source,x,y,label,subclass,score (csv), "
                                     "or one JSON object per line (jsonl)."),
    ],
    "oneclass evaluate": [
        ("RUN/scores/test.csv, RUN/scores/val.csv",
         "A run's test scores, and the validation scores that set its tuned threshold."),
        ("RUN/scores/test_images.csv",
         "A patch run's image table, for image AUROC and AUPRC."),
        ("RUN/recipe.yaml, RUN/metrics.json",
         "Dataset, method, gamma and seed to group by; pixel AUROC where maps were drawn."),
        ("RUN/select.json", "A run trained with a select: section: its grid points' held-out "
                            "metrics, shown in a table (and under selections with --format json)."),
        ("FILE", "A score table, CSV or JSON lines, with score and label columns; a source "
                 "column adds image metrics (topk_mean, k = 0.1)."),
        ("--plot PNG", "Test AUROC against gamma, mean and std per method."),
    ],
    "oneclass tsne": [
        ("RUN/model.pt, RUN/data.json", "The model and the split's members; the patch store "
                                        "that data.json names must still be there."),
        ("OUT", "The figure; RUN/tsne-SPLIT.png by default."),
        ("OUT, .png replaced by .json", "Beside it: points, silhouette, threshold, outcomes "
                                        "(TP/FN/TN/FP), perplexity, seed, max_points."),
    ],
    "oneclass explain": [
        ("RUN/model.pt, RUN/metrics.json", "The model, and the validation threshold the titles "
                                           "compare each score with."),
        ("OUT/RANK-SOURCE-xX-yY.png", "An item beside its anomaly map, titled with source, "
                                      "position, score and threshold; rank 1 scores highest."),
        ("OUT/scores.csv", "rank,id,source,x,y,score,figure of the items drawn."),
        ("OUT/.oneclass", "The marker: --overwrite replaces only a maps folder oneclass wrote."),
    ],
}


def exit_status(path: str) -> list[tuple[str, str]]:
    """The exit codes of command ``path`` ("oneclass train"), with what each means there."""
    if path in ("oneclass", "oneclass train"):
        return [(code, _TRAIN_EXIT.get(code, text)) for code, text in EXIT_STATUS]
    if path == "oneclass sweep":
        return [*EXIT_STATUS, ("10+N", "N runs failed (125: 115 or more); each is named on stderr with "
                                       "its reason and log, and the other runs went on.")]
    return list(EXIT_STATUS)


def sections(path: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """(title, [(term, text)]) of command ``path``: what ``epilog`` and the man page show."""
    found = [("EXAMPLES", EXAMPLES.get(path, [])), ("EXIT STATUS", exit_status(path)),
             ("ENVIRONMENT", ENVIRONMENT_OF.get(path, [])), ("FILES", FILES.get(path, []))]
    return [(title, entries) for title, entries in found if entries]


# -- --help: the epilog --------------------------------------------------------------

_WIDTH = 76  # the help formatter's 78 columns, less the epilog's indent of 2


def _wrap(text: str, first: str, rest: str) -> list[str]:
    # paths and flags stay whole: no breaks inside words or at their hyphens
    return textwrap.wrap(text, _WIDTH, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)


def epilog(path: str) -> str:
    """The typer ``epilog=`` of command ``path``: its sections as blocks that click prints
    as they are (the \\b line), already wrapped."""
    blocks = []
    for title, entries in sections(path):
        lines = [title.capitalize() + ":"]
        for term, text in entries:
            if title == "EXIT STATUS":
                lines += _wrap(text, f"  {term:<5}", " " * 7)
            else:
                lines += [f"  {line}" for line in term.splitlines()]
                lines += _wrap(text, " " * 6, " " * 6)
        blocks.append("\b\n" + "\n".join(lines))
    return "\n\n".join(blocks)


# -- man pages -------------------------------------------------------------------------


def _escape(text: str) -> str:
    lines = []
    for line in text.replace("\\", "\\\\").replace("-", "\\-").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _paragraphs(text: str) -> str:
    blocks = [" ".join(b.split()) for b in (text or "").strip().split("\n\n") if b.strip()]
    return "\n.PP\n".join(_escape(b) for b in blocks)


def _bold(text: str) -> str:
    """A bold text line; unlike .B, quotes in ``text`` stay as they are."""
    return "\\fB" + _escape(text) + "\\fR"


def _summary(help_text: str | None) -> str:
    text = (help_text or "").strip()
    return " ".join(text.split("\n\n")[0].split()) if text else ""


def _records(params, ctx) -> list[str]:
    out = []
    for param in params:
        flags, text = param.get_help_record(ctx)
        out += [".TP", _bold(flags), _escape(" ".join(text.split()))]
    return out


def _section(title: str, entries: list[tuple[str, str]]) -> list[str]:
    out = [f".SH {title}"]
    for term, text in entries:
        if title == "EXAMPLES":  # what it does, then the command as it is typed
            out += [".PP", _escape(text), ".PP", ".RS 4", ".nf", _escape(term), ".fi", ".RE"]
        else:
            out += [".TP", _bold(term), _escape(text)]
    return out


def _page(words: list[str], command, ctx, see_also: list[str]) -> str:
    name, path = "-".join(words), " ".join(words)
    usage = " ".join(command.collect_usage_pieces(ctx))
    params = [p for p in command.get_params(ctx) if p.get_help_record(ctx)]
    arguments = [p for p in params if p.param_type_name == "argument"]
    options = [p for p in params if p.param_type_name != "argument"]
    parts = [
        f'.TH "{name.upper()}" 1 "" "oneclass {__version__}" "oneclass manual"',
        ".nh", ".ad l",  # no hyphenation inside flags and paths, ragged right
        ".SH NAME", f"{_escape(name)} \\- {_escape(_summary(command.help) or path)}",
        ".SH SYNOPSIS", f".B {_escape(path)}\n{_escape(usage)}",
        ".SH DESCRIPTION", _paragraphs(command.help or ""),
    ]
    if arguments:
        parts += [".SH ARGUMENTS", *_records(arguments, ctx)]
    if options:
        parts += [".SH OPTIONS", *_records(options, ctx)]
    if hasattr(command, "commands"):
        parts.append(".SH COMMANDS")
        for sub_name in command.list_commands(ctx):
            sub = command.commands[sub_name]
            parts += [".TP", _bold(sub_name), _escape(_summary(sub.help))]
    for title, entries in sections(path):
        parts += _section(title, entries)
    if see_also:
        parts += [".SH SEE ALSO", ", ".join(f"\\fB{_escape(page)}\\fR(1)" for page in see_also)]
    return "\n".join(p for p in parts if p) + "\n"


def pages() -> dict[str, str]:
    """File name -> roff text for the whole command tree."""
    from oneclass.cli.main import app

    root = typer.main.get_command(app)
    tree: dict[tuple[str, ...], tuple] = {}

    # typer may vendor click, so the context class is taken from the command itself; the
    # root's context settings (-h as well as --help) reach the subcommands through it
    def walk(words: list[str], command, parent) -> None:
        settings = dict(command.context_settings or {})
        ctx = command.context_class(command, info_name=words[-1], parent=parent,
                                    terminal_width=80, max_content_width=80, **settings)
        tree[tuple(words)] = (command, ctx)
        if hasattr(command, "commands"):
            for sub_name in command.list_commands(ctx):
                walk([*words, sub_name], command.commands[sub_name], ctx)

    walk(["oneclass"], root, None)
    out: dict[str, str] = {}
    for words, (command, ctx) in tree.items():
        if len(words) == 1:  # the top page points to every other
            see_also = ["-".join(other) for other in tree if len(other) > 1]
        else:
            parent = ["-".join(words[:-1])] if len(words) > 2 else []
            children = ["-".join(other) for other in tree if other[:-1] == words]
            see_also = ["oneclass", *parent, *children]
        out["-".join(words) + ".1"] = _page(list(words), command, ctx, see_also)
    return out


def main(argv: list[str]) -> None:
    target = Path(argv[0] if argv else "man")
    target.mkdir(exist_ok=True)
    for stale in target.glob("*.1"):
        stale.unlink()
    for filename, text in pages().items():
        (target / filename).write_text(text)
        print(target / filename)


if __name__ == "__main__":
    main(sys.argv[1:])
