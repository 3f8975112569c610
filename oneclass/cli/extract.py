"""``oneclass extract-patches``: a dataset → a patch store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from oneclass import recipe as recipes
from oneclass.cli.common import SET

# flag → recipe key: flags are shorthands for --set and win over it
_FLAG_KEYS = {
    "dataset": "dataset.name", "root": "dataset.root", "size": "patches.size",
    "stride": "patches.stride", "mask_frac": "patches.mask_frac", "resize": "patches.resize",
    "level": "patches.level", "max_per_image": "patches.max_per_image",
    "channels": "patches.channels", "workers": "patches.workers", "seed": "seed",
    "whole_image": "patches.whole_image", "mask_threshold": "patches.mask_threshold",
    "bits": "patches.bits",
}


def extract_patches(
    recipe: Optional[Path] = typer.Argument(None, help="A YAML recipe; flags override its keys.",
                                            show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="The patch store folder to write."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d",
                                          help="Dataset plugin (see `oneclass list datasets`). [default: synthetic]"),
    root: Optional[Path] = typer.Option(None, "--root", help="The dataset's root folder."),
    size: Optional[int] = typer.Option(None, "--size", help="Patch side in pixels (at --level). [default: 64]"),
    stride: Optional[int] = typer.Option(None, "--stride", help="Grid step in pixels. [default: size]"),
    mask_frac: Optional[float] = typer.Option(
        None, "--mask-frac", help="A patch is anomalous iff this fraction of its mask is set (patches only). [default: 0.05]"),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize patches to N x N (area averaging; linear when enlarging)."),
    mask_threshold: Optional[int] = typer.Option(
        None, "--mask-threshold", help="For masks with values other than {0, 1} or {0, 255}: "
        "pixels at or above this value are anomalous. [default: refuse such masks]"),
    bits: Optional[int] = typer.Option(
        None, "--bits", help="Significant bits of 16-bit images' pixels (8-16; a 12-bit camera's: 12); "
        "their top 8 are kept. 8-bit images are read as they are. [default: 16, refusing 16-bit "
        "files whose pixels all stay below 4096]"),
    whole_image: Optional[bool] = typer.Option(
        None, "--whole-image/--patches", show_default=False,
        help="One item per image, resized to --resize x --resize (aspect ratio not kept), anomalous "
        "when its mask marks any pixel or it lies in an anomalous folder. [default: --patches]"),
    level: Optional[int] = typer.Option(None, "--level", help="Pyramid level of whole-slide images. [default: 0]"),
    max_per_image: Optional[int] = typer.Option(
        None, "--max-per-image", help="Keep at most K patches per image, drawn uniformly at random with --seed (not by label)."),
    channels: Optional[int] = typer.Option(
        None, "--channels", help="1 (grayscale) or 3 (RGB); every image is converted to it. [default: the first image's]"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for --max-per-image sampling. [default: 0]"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Worker processes. [default: 1]"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary on stderr."),
    set_: Optional[list[str]] = SET,
) -> None:
    """Cut a dataset's images into a labelled patch store.

    Top-left corners lie at 0, stride, 2*stride, ... while the whole patch fits. A patch is
    anomalous iff the fraction of anomalous mask pixels in it is >= --mask-frac; its
    subclass is its image's defect type, "good" otherwise. With --whole-image each image
    is one item instead. The store (see Files) is written under a temporary name and
    renamed when complete; its path is printed on stdout, the counts per label and
    subclass on stderr.
    """
    from oneclass.data.extract import extract
    from oneclass.stores import extraction_params, make_dataset

    flags = {"dataset": dataset, "root": str(root) if root else None, "size": size, "stride": stride,
             "mask_frac": mask_frac, "resize": resize, "level": level,
             "max_per_image": max_per_image, "channels": channels, "workers": workers, "seed": seed,
             "whole_image": whole_image, "mask_threshold": mask_threshold, "bits": bits}
    values = {_FLAG_KEYS[k]: v for k, v in flags.items() if v is not None}
    names = {_FLAG_KEYS[k]: "--" + k.replace("_", "-") for k in flags}
    config = recipes.load(recipe, set_ or [], values, names)
    plugin = make_dataset(config)
    params = extraction_params(config)
    with _Progress(quiet) as progress:
        path, meta = extract(plugin, params, out, overwrite=overwrite, on_plan=progress.plan,
                             on_task=progress.advance, recipe=config.to_dict())
    if not quiet:
        _summary(meta)
    print(path)


class _Progress:
    def __init__(self, quiet: bool):
        self.bar = None
        self.task = None
        self.patches = 0
        if quiet:  # rich (the console, the bar) is not even imported
            return
        from oneclass.cli.console import err

        if err.is_terminal:  # batch logs get the summary, not bar redraws
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("extracting"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[patches]} patches"), TimeElapsedColumn(),
                                console=err, transient=False)

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def plan(self, total: int) -> None:
        if self.bar:
            self.task = self.bar.add_task("extract", total=total, patches=0)

    def advance(self, chunk) -> None:
        self.patches += len(chunk)
        if self.bar and self.task is not None:
            self.bar.update(self.task, advance=1, patches=self.patches)


def _summary(meta: dict) -> None:
    from rich.table import Table

    from oneclass.cli.console import err

    table = Table(title=f"{meta['count']} patches of {len(meta['sources'])} sources",
                  title_justify="left")
    table.add_column("label", justify="right")
    table.add_column("subclass")
    table.add_column("patches", justify="right")
    for row in meta["counts"]:
        table.add_row(str(row["label"]), row["subclass"], str(row["count"]))
    err.print(table)
