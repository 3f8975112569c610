import re
import sys
import textwrap

import pytest

from conftest import oneclass
from oneclass import __version__, registry
from oneclass.errors import OneclassError

PLUGIN = '''
from dataclasses import dataclass

import numpy as np

from oneclass.data.datasets.base import Dataset, Item, Loaded


@dataclass
class StripeItem(Item):
    def load(self):
        image = np.zeros((16, 16, 1), np.uint8)
        labels = np.zeros((16, 16), np.uint8)
        labels[:, :8] = 1
        return Loaded(image, labels, ["stripe"])


class StripesDataset(Dataset):
    """Two striped test images from a third-party package."""

    needs_root = False
    name = "stripes"

    def items(self):
        return [StripeItem("one", "stripe"), StripeItem("two", "stripe")]


from oneclass.methods.base import Method


class EchoMethod(Method):
    """A method living in another distribution."""

    name = "echo"
    supervision = "unsupervised"

    @dataclass
    class Params:
        gain: float = 1.0

    def fit(self, train, val=None):
        pass

    def score(self, data):
        return self.map(lambda x: self.params.gain * x.mean((1, 2, 3)), data)


class HalfMethod:
    """Registered as a method, but only half of one."""

    name = "half"

    def score(self, data):
        return data
'''


@pytest.fixture()
def plugin_path(tmp_path):
    (tmp_path / "oneclass_stripes.py").write_text(PLUGIN)
    info = tmp_path / "oneclass_stripes-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: oneclass-stripes\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [oneclass.datasets]
        stripes = oneclass_stripes:StripesDataset

        [oneclass.methods]
        echo = oneclass_stripes:EchoMethod
        half = oneclass_stripes:HalfMethod
        """))
    return tmp_path


@pytest.mark.slow
def test_entry_point_plugins_are_discovered(plugin_path, tmp_path):
    env = {"PYTHONPATH": str(plugin_path)}
    listing = oneclass("list", "datasets", env=env)
    assert listing.returncode == 0
    line = next(l for l in listing.stdout.splitlines() if l.startswith("stripes"))
    assert "Two striped test images" in line and "[oneclass-stripes 0.3]" in line
    methods = oneclass("list", "methods", env=env)
    assert "echo" in methods.stdout and "A method living in another distribution." in methods.stdout
    result = oneclass("extract-patches", "-d", "stripes", "--size", 8, "--mask-frac", 0.5,
                      "--out", tmp_path / "s", "-q", env=env)
    assert result.returncode == 0, result.stderr
    from oneclass.data.store import PatchStore

    labels = [(r["source"], r["x"], r["label"], r["subclass"]) for r in PatchStore.open(tmp_path / "s").index]
    assert labels[:2] == [("one", "0", "1", "stripe"), ("one", "8", "0", "good")]


@pytest.mark.slow
def test_a_method_plugin_lacking_the_protocol_fails_at_load_in_one_line(plugin_path, tmp_path):
    env = {"PYTHONPATH": str(plugin_path)}
    listing = oneclass("list", "methods", env=env)
    line = next(l for l in listing.stdout.splitlines() if l.startswith("half"))
    assert "failed to load" in line and "not a oneclass method" in line and "no `Params` dataclass" in line
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: {name: half}\n")
    result = oneclass("train", recipe, "--out", tmp_path / "run", env=env)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "method 'half' (oneclass-stripes 0.3) from 'oneclass_stripes:HalfMethod': not a oneclass method: " \
        "`supervision` is None" in result.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_name_lists_known_and_suggests():
    with pytest.raises(OneclassError) as info:
        registry.datasets.get("mvtek")
    text = str(info.value)
    assert "did you mean 'mvtec'?" in text and "known datasets: busi, camelyon16" in text


def test_every_builtin_dataset_loads_and_documents_its_layout():
    for name, description, origin in registry.datasets.describe():
        if origin != "built-in":
            continue
        plugin = registry.datasets.get(name)
        assert plugin.name == name and description and plugin.layout.strip()


def test_names_must_be_kebab_case():
    reg = registry.Registry("thing", "oneclass.things")
    with pytest.raises(ValueError):
        reg.add("Bad_Name", "x:y", "d")


def test_version_help_and_verbose_listing():
    assert oneclass("--version").stdout.strip() == f"oneclass {__version__}"
    help_text = oneclass("--help").stdout
    assert "extract-patches" in help_text and "list" in help_text
    verbose = oneclass("list", "datasets", "--verbose").stdout
    assert "Anomalous/gt/<stem>_gt.png" in verbose
    assert re.search(r"^    dataset\.missing_masks +skip\b", verbose, re.M), verbose


def test_verbose_method_listing_is_a_table_of_used_parameters():
    """Each method's recipe keys with default and meaning (the Params comments); a variant
    leaves out what it does not use."""
    from oneclass.cli.listing import field_docs
    from oneclass.methods.vqvae import SSVQVAE

    docs = field_docs(SSVQVAE.Params)
    assert docs["eta"] == "weight of L_normal against L_anomalous (Eq. 4)"  # inherited, inline
    assert docs["restart_below"].startswith("a code whose running use")  # the lines above it
    shown = oneclass("list", "methods", "-v").stdout
    blocks = {block.split()[0]: block for block in shown.split("\n\n") if block.strip()}
    assert re.search(r"^    method\.eta +1\.0 +weight of the labelled items$", blocks["deep-sad"], re.M)
    assert "method.eta " not in blocks["deep-svdd"]  # unsupervised: no labelled term
    assert "method.codes " in blocks["ss-vq-vae"] and "method.codes " not in blocks["ss-vae"]
    assert "method.lambda3 " in blocks["c-ss-ms-gvae"] and "method.lambda3 " not in blocks["ss-ms-gvae"]
    assert "method.delta " in blocks["gvae-a1"] and "method.delta " not in blocks["gvae-a2"]


def test_cli_import_stays_light():
    code = ("import sys, oneclass.cli.main, oneclass.data.extract; "
            "print(sorted(m for m in ('torch', 'torchvision', 'sklearn') if m in sys.modules))")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    assert out == "[]"


def test_synthetic_is_deterministic_and_prefix_stable(tmp_path):
    a = oneclass("extract-patches", "--set", "dataset.normal=2", "--set", "dataset.anomalous=2",
                 "--out", tmp_path / "a", "-q")
    b = oneclass("extract-patches", "--set", "dataset.normal=2", "--set", "dataset.anomalous=4",
                 "--out", tmp_path / "b", "-q")
    assert a.returncode == b.returncode == 0
    from oneclass.data.store import PatchStore

    sa, sb = PatchStore.open(tmp_path / "a"), PatchStore.open(tmp_path / "b")
    n = sum(1 for r in sa.index if r["source"].startswith("normal"))
    assert (sa.images[:n] == sb.images[:n]).all()
    assert {r["subclass"] for r in sb.index if r["label"] == "1"} == {"bead", "film"}
    assert sa.meta["sources"][0]["files"][0]["sha256"] == sb.meta["sources"][0]["files"][0]["sha256"]


def test_a_plugin_lists_its_items_once_per_instance():
    """Cache key, subclasses and extraction share one listing (one directory walk, one
    warning); callers get their own list to change."""
    from oneclass.data.datasets.synthetic import SyntheticDataset

    calls = []

    class Counted(SyntheticDataset):
        def items(self):
            calls.append(1)
            return super().items()

    dataset = Counted(None, SyntheticDataset.Options(normal=2, anomalous=2, height=64, width=64))
    first = dataset.items()
    first.clear()
    assert len(dataset.items()) == 4 and dataset.subclasses() and len(calls) == 1
    assert len(Counted(None, SyntheticDataset.Options(normal=1, anomalous=1, height=64, width=64)).items()) == 2


BROKEN = '''
from dataclasses import dataclass

from oneclass.data.datasets.base import Dataset
from oneclass.methods.base import Method


class TupleDataset(Dataset):
    name = "tuple"

    @dataclass
    class Options:
        size: tuple[int, int] = (1, 2)


class ShapedMethod(Method):
    name = "shaped"
    supervision = "unsupervised"

    @dataclass
    class Params:
        gain: float = 1.0
        shape: "Shape" = None

    def fit(self, train, val=None):
        pass

    def score(self, data):
        return data
'''


def test_a_plugin_that_fails_on_import_or_declares_options_a_recipe_cannot_give_fails_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "broken_plugins.py").write_text(BROKEN)
    (tmp_path / "raising_plugin.py").write_text("raise RuntimeError('no licence file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    datasets, methods = registry.Registry("dataset", "oneclass.none"), registry.Registry("method", "oneclass.none")
    datasets.add("tuple", "broken_plugins:TupleDataset", "d")
    datasets.add("raising", "raising_plugin:Anything", "d")
    methods.add("shaped", "broken_plugins:ShapedMethod", "m")
    with pytest.raises(OneclassError, match=r"^dataset 'tuple' \(built-in\) from 'broken_plugins:TupleDataset': "
                                            r"`Options` types a recipe cannot give: size: tuple\[int, int\]$"):
        datasets.get("tuple")
    with pytest.raises(OneclassError, match=r"^dataset 'raising' \(built-in\) failed to load from "
                                            r"'raising_plugin:Anything': RuntimeError: no licence file$"):
        datasets.get("raising")
    with pytest.raises(OneclassError, match=r"not a oneclass method: `Params` types a recipe cannot give: "
                                            r"Params type hints unreadable \(NameError: name 'Shape' is not defined\)"):
        methods.get("shaped")


def test_bare_list_and_dict_options_take_any_items():
    from oneclass.recipe import coerce, hint_problems

    assert coerce([1, "a"], list, "k") == [1, "a"] and coerce({"a": 1}, dict, "k") == {"a": 1}
    with pytest.raises(OneclassError, match="k: expected a list, got integer 3"):
        coerce(3, list, "k")
    import dataclasses
    import typing

    Loose = dataclasses.make_dataclass("Loose", [("items", typing.List, None), ("pair", tuple, None)])
    assert hint_problems(Loose) == ["pair: <class 'tuple'>"]
    for name in registry.methods.names():
        assert hint_problems(registry.methods.get(name).Params) == [], name
