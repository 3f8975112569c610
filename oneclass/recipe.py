"""YAML recipes → typed configuration.

A recipe has the sections ``dataset``, ``patches``, ``split``, ``method``, ``train`` and
``evaluate`` plus a top-level ``seed``. Every key is checked: an unknown key or a value of
the wrong type stops with one line naming the file and the key path, with a suggestion
for near-misses. ``--set section.key=value`` overrides are applied before checking, so
they are validated the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from oneclass.errors import OneclassError


class RecipeError(OneclassError):
    pass


@dataclass
class DatasetSection:
    name: str = "synthetic"
    root: str | None = None
    # the plugin's own options; checked against the plugin's Options dataclass
    options: dict[str, Any] = field(default_factory=dict)


# a key added after runs and sweeps were recorded: left out of to_dict while at its
# default, so that an unfinished run resumes and a sweep's recipe hash stays what it was
_LATER = {"omitted_at_default": True}


@dataclass
class PatchesSection:
    size: int | None = None  # default 64; left out with whole_image
    stride: int | None = None  # default: size (non-overlapping)
    mask_frac: float = 0.05
    resize: int | None = None
    level: int = 0  # pyramid level, for whole-slide images only
    max_per_image: int | None = None
    channels: int | None = None  # 1 (grayscale) or 3 (RGB); default: the images' own
    workers: int = 1
    whole_image: bool = False  # one item per image, resized to resize x resize
    mask_threshold: int | None = None  # masks not strictly binary: pixels >= it are anomalous
    # significant bits of 16-bit images' pixels (8-16); default 16, refusing data below 4096
    bits: int | None = field(default=None, metadata=_LATER)


@dataclass
class SplitSection:
    """The semi-supervised protocol; see oneclass/data/splits.py."""

    gamma: float = 0.0  # M / (L + M + N): labelled anomalies' share of the training set
    labeled_anomalies: int | None = None  # M as a count (few-shot), instead of gamma
    labeled_normal: int = 0  # L
    contamination: float = 0.1  # polluting anomalies' share of the training set L + M + N
    seen_subclasses: Union[list[str], str, None] = None  # labelled anomalies' subclasses; "half"
    train_size: int | None = None  # L + M + N; default: the largest the pool allows
    val_fraction: float = 0.1  # of the sources (or patches) set aside for validation
    # a small validation set of limited anomaly types (the perceptual-AE paper's setting,
    # Sec. 3.3; its Camelyon16 one: 200 tumour tiles from 4 slides): the validation
    # anomalies are only those of val_subclasses (a list, or "seen": seen_subclasses',
    # all where that is unset), at most val_anomalies of them (a seeded draw); the rest
    # are unused
    val_anomalies: int | None = field(default=None, metadata=_LATER)
    val_subclasses: Union[list[str], str, None] = field(default=None, metadata=_LATER)
    test_fraction: float = 0.2  # of the sources (or patches) set aside for testing
    # a source prefix (MNIST's "t10k/"): the items whose source begins with it are the
    # test pool, the dataset's own test split, in place of test_fraction
    test_sources: str | None = None
    test_anomaly_share: float = 1.0  # of the test pool's anomalies in an unbalanced test set
    test_size: int | None = None  # default: the largest the test pool allows
    test_balanced: bool = True  # as many normal as anomalous test patches
    group_by: Literal["source", "none"] = "source"
    seed: int | None = None  # default: the recipe's seed


@dataclass
class MethodSection:
    name: str | None = None
    # every other key is a parameter of the method, checked against its Params
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainSection:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.5e-6
    lr_milestones: list[int] = field(default_factory=list)  # epochs where lr is multiplied by 0.1
    # an epoch-counted stage's epoch is at least this many batches: a small training set is
    # passed over again, reshuffled, within the epoch (0: one pass). Stages counted in
    # steps (ss-VQ-VAE's, DevNet's) are not affected.
    min_epoch_steps: int = 0
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    amp: bool = False  # mixed precision (float16 autocast), CUDA only
    channels_last: bool = False  # 4-d weights and batches in NHWC memory order, training and scoring
    # torch.compile each stage's loss; true refuses where this torch build cannot compile
    # (no C++ compiler, no Triton), try falls back to eager mode and records why
    compile: Union[bool, Literal["try"]] = False
    # read (and on CUDA pin) the next batch in a thread while one trains; auto: on CUDA only
    # (1.14x there for Deep SAD; on 2 CPU cores 0.98-1.12x slower, the thread taking a core's time)
    prefetch: Union[bool, Literal["auto"]] = "auto"
    deterministic: bool = False  # torch.use_deterministic_algorithms
    early_stopping: int | None = None  # patience in epochs on the monitored validation figure
    # last: each stage ends with its last epoch; best: each stage scored on the validation
    # set keeps its best epoch by the monitored figure (recorded in metrics.json), as
    # early_stopping does whatever keep says
    keep: Literal["last", "best"] = "last"
    # what early_stopping and keep: best judge an epoch by: auroc, the validation AUROC
    # (higher is better; the validation anomalies decide); normal_score, the mean score of
    # the validation normals (lower is better; no anomaly is used: the perceptual-AE
    # paper's "until the loss on the holdout set of normal images stops decreasing",
    # meaningful where the score is the loss the method trains on normals)
    monitor: Literal["auroc", "normal_score"] = field(default="auroc", metadata=_LATER)
    # R > 1: one model of R members from seeds S..S+R-1 on the run's split, scored by the
    # mean of their scores standardised on the validation normals (oneclass.ensemble)
    ensemble: int = 1


@dataclass
class EvaluateSection:
    pixel_auroc: bool = True  # when the method draws maps and the store has masks
    image_score: Literal["max", "mean", "topk_mean"] = "topk_mean"  # patch scores → image score
    image_topk: float = 0.1  # share of an image's patches that topk_mean averages (DevNet)


@dataclass
class SelectSection:
    # recipe key -> the values to try (method.* and train.* keys); every combination is
    # trained on the training set and scored on held-out folds of the validation set
    grid: dict[str, Any] = field(default_factory=dict)
    folds: int = 3  # folds of the validation set, stratified by label and grouped by image
    metric: Literal["auroc", "auprc"] = "auroc"


@dataclass(frozen=True)
class Range:
    """An interval of allowed values: [low, high], either end open or absent."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if value != value:  # NaN
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def __str__(self) -> str:
        low, high = (f"{v:g}" if isinstance(v, float) else str(v) for v in (self.low, self.high))
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


_POSITIVE, _COUNT, _SHARE = Range(1), Range(0), Range(0, 1, low_open=True, high_open=True)
SEEDS = Range(0, 2**32 - 1)  # numpy's and torch's seeds: unsigned 32 bits


def check_seeds(first: int, count: int, where: str) -> None:
    """Seeds first .. first + count - 1 (--seed with --repeats) must all be seeds."""
    if first not in SEEDS or first + count - 1 not in SEEDS:
        raise RecipeError(f"{where}: seeds must be in {SEEDS}, got {first}"
                          + (f" to {first + count - 1}" if count > 1 else ""))

# every numeric key's allowed values, checked at load (list keys: each element)
RANGES = {
    "seed": SEEDS, "split.seed": SEEDS,
    "patches.size": _POSITIVE, "patches.stride": _POSITIVE, "patches.resize": _POSITIVE,
    "patches.mask_frac": Range(0, 1, low_open=True), "patches.level": _COUNT,
    "patches.max_per_image": _POSITIVE, "patches.channels": Range(1, 3), "patches.workers": _POSITIVE,
    "patches.mask_threshold": Range(1, 65535), "patches.bits": Range(8, 16),
    "split.gamma": Range(0, 0.5), "split.labeled_anomalies": _COUNT, "split.labeled_normal": _COUNT,
    "split.contamination": Range(0, 1, high_open=True), "split.train_size": _POSITIVE,
    "split.val_fraction": _SHARE, "split.test_fraction": _SHARE, "split.test_size": _POSITIVE,
    "split.test_anomaly_share": Range(0, 1, low_open=True),
    "train.epochs": _POSITIVE, "train.batch_size": _POSITIVE, "train.lr": Range(0, low_open=True),
    "train.weight_decay": _COUNT, "train.min_epoch_steps": _COUNT, "train.lr_milestones": _POSITIVE, "train.early_stopping": _POSITIVE,
    "train.ensemble": _POSITIVE,
    "evaluate.image_topk": Range(0, 1, low_open=True), "select.folds": Range(2),
}

# what a person writes as a number but YAML 1.1 reads as a string: 1e-4, 1E-4, +2e3
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class Recipe:
    seed: int = 0
    description: str | None = None
    dataset: DatasetSection = field(default_factory=DatasetSection)
    patches: PatchesSection = field(default_factory=PatchesSection)
    split: SplitSection = field(default_factory=SplitSection)
    method: MethodSection = field(default_factory=MethodSection)
    train: TrainSection = field(default_factory=TrainSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    select: SelectSection = field(default_factory=SelectSection)
    source: str = field(default="<defaults>", repr=False, compare=False)
    # key path → what set it on the command line ("--set 'k=v'", "--device"), for errors
    origins: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def where(self, key_path: str) -> str:
        """What to blame for a key's value: the command-line option that set it, else the file."""
        return origin(self.origins, key_path, self.source)

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        """The recipe as its record holds it; ``full``: with the keys added later that the
        record leaves out at their defaults (:data:`_LATER`)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name in ("source", "origins"):
                continue
            value = getattr(self, f.name)
            out[f.name] = _section_to_dict(value, full) if dataclasses.is_dataclass(value) else value
        return out

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_RecipeDumper, sort_keys=False)


# sections whose remaining keys are handed to a plugin rather than checked here
_OPEN_SECTIONS = {DatasetSection: "options", MethodSection: "params"}


def _section_to_dict(section: Any, full: bool = False) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if not full and f.metadata.get("omitted_at_default") and value == f.default:
            continue
        if f.name == _OPEN_SECTIONS.get(type(section)):
            out.update(value)
        else:
            out[f.name] = value
    return out


def load(path: str | Path | None, overrides: list[str] = (),
         values: dict[str, Any] | None = None, flags: dict[str, str] | None = None) -> Recipe:
    """Read a recipe file (or start from defaults when path is None), then apply the
    ``--set key=value`` overrides, then ``values`` (key path → value, from explicit flags
    named in ``flags``, key path → flag). Errors name what set the key: the file, the
    ``--set`` or the flag."""
    source = "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise RecipeError(f"{path}: recipe file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{path}: cannot read recipe: {exc}") from None
        try:
            data = parse_yaml(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise RecipeError(f"{path}: invalid YAML{where}: {problem}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: a recipe must be a mapping of sections")
    origins: dict[str, str] = {}
    for item in overrides:
        origins[apply_override(data, item)] = f"--set {item!r}"
    for key, value in (values or {}).items():
        where = (flags or {}).get(key, key)
        _set_path(data, key.split("."), value, where)
        origins[key] = where
    return from_dict(data, source, origins)


class _RecipeLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last
    and drops the first without a word: a second ``train:`` section would erase the
    first). Keys merged in with ``<<:`` may be overridden, as YAML means. Keys are text:
    YAML reads ``{16: relu3_2}`` with a number for a key, which ``--set
    method.dpa.layers.16=...`` names as text, and select.json and the sweep's recipe hash
    (JSON) would turn into text or fail to sort beside text; 16 and '16' are one key."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, typing.Hashable):
                    continue  # refused as a key by the constructor itself
                key = text_key(key)
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first at line {first[key]})", key_node.start_mark)
                first[key] = key_node.start_mark.line + 1
        # merged keys come first, so the mapping's own override them
        return {text_key(k): v for k, v in super().construct_mapping(node, deep).items()}


def text_key(key) -> str:
    return key if isinstance(key, str) else str(key)


def text_keys(value):
    """``value`` with every mapping key as text, as recipes read them (for a record
    written before they did: a run's recipe.yaml of number keys)."""
    if isinstance(value, dict):
        return {text_key(k): text_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [text_keys(v) for v in value]
    return value


# YAML 1.1 reads 010 as 8 (octal) and 1:30 as 90 (base 60), which nobody writing a
# seed or a step count means. Recipes read numbers as YAML 1.2 does (0x.. and 0o.. for
# hexadecimal and octal, 1e-4 a float), but a leading zero keeps a scalar a string, as
# JSON has it: 010 and 1:30 fail an integer key's type check, and a folder named 09
# stays "09".
_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_RecipeLoader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F][0-9a-fA-F_]*|0o[0-7][0-7_]*)$"),
    list("-+0123456789"))
_RecipeLoader.add_implicit_resolver(  # YAML 1.2's floats, 1e-4 among them (1.1 wants 1.0e-4)
    _FLOAT_TAG, re.compile(r"""^(?:[-+]?(?:\.[0-9][0-9_]*|(?:0|[1-9][0-9_]*)(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    base = {"0x": 16, "0o": 8}.get(text[:2], 10)
    try:
        return int(text if base == 10 else text[2:], base)
    except ValueError:  # an explicit !!int on what is not one
        raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not an integer", node.start_mark) from None


_RecipeLoader.add_constructor(_INT_TAG, _construct_int)


class _RecipeDumper(yaml.SafeDumper):
    """Writes a run's recipe.yaml so that both this module's reader and plain YAML 1.1
    (artifacts.read_recipe_copy) read back what was written: a string that either would
    take for a number (08, 1:30, 1e-4) is quoted."""


_RecipeDumper.yaml_implicit_resolvers = {
    first: _RecipeLoader.yaml_implicit_resolvers.get(first, []) + yaml.SafeDumper.yaml_implicit_resolvers.get(first, [])
    for first in set(_RecipeLoader.yaml_implicit_resolvers) | set(yaml.SafeDumper.yaml_implicit_resolvers)}


def parse_yaml(text: str) -> Any:
    """A recipe's YAML (a whole file or one ``--set`` value) as this module reads it."""
    return _unshared(yaml.load(text, Loader=_RecipeLoader))


def parse_value(raw: str) -> Any:
    """A ``--set``/``--grid`` value: YAML when it parses, else the text itself."""
    try:
        return parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def _unshared(value):
    """A copy in which no mapping or list is shared: YAML aliases (``ss-gvae: *gvae``)
    make one object of two methods' blocks, and a ``--set`` on one would change both."""
    if isinstance(value, dict):
        return {k: _unshared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared(v) for v in value]
    return value


def origin(origins: dict[str, str], key_path: str, source: str) -> str:
    """The command-line option that set ``key_path`` or a section above it, else ``source``."""
    parts = key_path.split(".")
    for end in range(len(parts), 0, -1):
        found = origins.get(".".join(parts[:end]))
        if found is not None:
            return found
    below = [where for key, where in origins.items() if key.startswith(key_path + ".")]
    return below[0] if below else source


def apply_override(data: dict[str, Any], item: str) -> str:
    """Apply one ``section.key=value`` override (the value parsed as YAML); returns the key."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"--set {item!r}: expected section.key=value")
    _set_path(data, key.split("."), parse_value(raw), f"--set {item!r}")
    return key


def _set_path(data: dict[str, Any], parts: list[str], value: Any, where: str) -> None:
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"{where}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def from_dict(data: dict[str, Any], source: str = "<recipe>", origins: dict[str, str] | None = None) -> Recipe:
    recipe = _build(Recipe, data, source, "", origins or {})
    recipe.source = source
    recipe.origins = dict(origins or {})
    return recipe


def check_options(cls: type, data: dict[str, Any], source: str, prefix: str,
                  origins: dict[str, str] | None = None) -> Any:
    """Build a plugin's options dataclass, failing on unknown keys and wrong types."""
    return _build(cls, data, source, prefix, origins or {})


def _build(cls: type, data: Any, source: str, prefix: str, origins: dict[str, str]) -> Any:
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(data, dict):
        raise RecipeError(f"{origin(origins, where, source)}: {where}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in ("source", "origins")}
    open_field = _OPEN_SECTIONS.get(cls)
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{prefix}{key}"
        blame = origin(origins, key_path, source)
        if not isinstance(key, str):
            raise RecipeError(f"{blame}: {key_path}: keys must be strings")
        if key not in fields or key == open_field:
            if open_field is not None:
                extra[key] = value
                continue
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            known = ", ".join(fields)
            raise RecipeError(f"{blame}: {key_path}: unknown key{hint}; expected one of: {known}")
        hint_type = hints[key]
        if dataclasses.is_dataclass(hint_type):
            values[key] = _build(hint_type, value if value is not None else {}, source, f"{key_path}.", origins)
        else:
            values[key] = coerce(value, hint_type, f"{blame}: {key_path}")
            _check_range(values[key], key_path, f"{blame}: {key_path}")
            _check_pattern(values[key], key_path, f"{blame}: {key_path}")
    if open_field is not None:
        values[open_field] = extra
    return cls(**values)


# string keys whose form is known at load: (regular expression, the refusal's message)
PATTERNS = {"train.device": (re.compile(r"auto|cpu|cuda(:\d+)?"), "unknown device {!r} (auto, cpu, cuda, cuda:N)")}


def _check_pattern(value: Any, key_path: str, where: str) -> None:
    pattern = PATTERNS.get(key_path)
    if pattern is not None and isinstance(value, str) and not pattern[0].fullmatch(value):
        raise RecipeError(f"{where}: {pattern[1].format(value)}")


def _check_range(value: Any, key_path: str, where: str) -> None:
    allowed = RANGES.get(key_path)
    if allowed is None or value is None:
        return
    for item in value if isinstance(value, list) else [value]:
        if item not in allowed:
            raise RecipeError(f"{where}: must be {'in ' if allowed.high is not None else ''}{allowed}, "
                              f"got {item!r}")


def hint_problems(cls: type, prefix: str = "") -> list[str]:
    """The fields of the options dataclass ``cls`` (and of dataclasses nested in it) whose
    type a recipe cannot give, as ``field: hint``; empty when every one can. Checked when
    a plugin loads, so that its author sees one line, not a TypeError on first use."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:  # an annotation naming what its module lacks
        return [f"{prefix or cls.__name__ + ' '}type hints unreadable ({type(exc).__name__}: {exc})"]
    problems = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints.get(f.name, Any)
        if dataclasses.is_dataclass(hint):
            problems += hint_problems(hint, f"{prefix}{f.name}.")
        elif not _readable(hint):
            problems.append(f"{prefix}{f.name}: {hint!r}")
    return problems


def _readable(hint: Any) -> bool:
    """Whether :func:`coerce` reads ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint in (bool, int, float, str, list, dict) or origin in (Literal, dict):
        return True
    if origin in (Union, types.UnionType):
        return all(_readable(a) for a in args if a is not type(None))
    return origin is list and (not args or _readable(args[0]))


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint, converting only lossless cases (int → float)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where)
            except RecipeError:
                pass
        raise RecipeError(f"{where}: expected {_type_name(hint)}, got {_describe(value)}")
    if origin is Literal:
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint_text = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}{hint_text}")
    if origin is list or hint is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {_describe(value)}")
        return [coerce(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {_describe(value)}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported type hint {hint!r}")
    raise RecipeError(f"{where}: expected {_type_name(hint)}, got {_describe(value)}")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else ""
        )
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    kind = {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "list", dict: "mapping"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"
