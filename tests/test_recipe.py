import re

import pytest

from conftest import one_error_line, oneclass
from oneclass import recipe as recipes
from oneclass.errors import OneclassError


def _write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_defaults_and_types(tmp_path):
    r = recipes.load(_write(tmp_path, "patches:\n  size: 128\n  mask_frac: 1\ndataset:\n  name: mvtec\n  root: x\n  missing_masks: error\n"))
    assert r.patches.size == 128 and r.patches.mask_frac == 1.0 and isinstance(r.patches.mask_frac, float)
    assert r.dataset.options == {"missing_masks": "error"}
    assert r.split.contamination == 0.1


@pytest.mark.parametrize("text,message", [
    ("patches:\n  sise: 3\n", "r.yaml: patches.sise: unknown key (did you mean 'patches.size'?)"),
    ("patches:\n  size: big\n", "r.yaml: patches.size: expected an integer or null, got string 'big'"),
    ("patches:\n  size: 3.5\n", "r.yaml: patches.size: expected an integer or null, got number 3.5"),
    ("pathces:\n  size: 3\n", "r.yaml: pathces: unknown key (did you mean 'patches'?)"),
    ("split:\n  group_by: sources\n", "split.group_by: expected one of 'source', 'none', got 'sources' (did you mean 'source'?)"),
    ("train:\n  amp: 1\n", "train.amp: expected true or false, got integer 1"),
    ("patches: [1, 2]\n", "r.yaml: patches: expected a mapping"),
    ("- a\n", "a recipe must be a mapping"),
    ("patches:\n  size: [\n", "r.yaml: invalid YAML"),
])
def test_errors_name_file_and_key(tmp_path, text, message):
    with pytest.raises(recipes.RecipeError) as info:
        recipes.load(_write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_set_overrides_are_typed_and_checked(tmp_path):
    path = _write(tmp_path, "patches:\n  size: 64\n")
    r = recipes.load(path, ["patches.size=32", "patches.stride=16", "dataset.tissue_frac=0.3",
                            "split.seen_subclasses=[a, b]"])
    assert (r.patches.size, r.patches.stride) == (32, 16)
    assert r.dataset.options["tissue_frac"] == 0.3 and r.split.seen_subclasses == ["a", "b"]
    with pytest.raises(recipes.RecipeError, match="patches.strid: unknown key"):
        recipes.load(path, ["patches.strid=3"])
    with pytest.raises(recipes.RecipeError, match="expected section.key=value"):
        recipes.load(path, ["patches.size"])


def test_yaml_is_loaded_safely(tmp_path):
    with pytest.raises(recipes.RecipeError, match="invalid YAML"):
        recipes.load(_write(tmp_path, "seed: !!python/object/apply:os.system ['true']\n"))


def test_resolved_recipe_round_trips(tmp_path):
    r = recipes.load(_write(tmp_path, "seed: 4\ndataset:\n  name: busi\n  root: /data\n  foo: 1\nmethod:\n  name: deep-sad\n  eta: 2\n"))
    again = recipes.load(_write(tmp_path, r.to_yaml()))
    assert again == r and again.method.params == {"eta": 2}


def test_plugin_options_are_checked_by_the_cli(tmp_path):
    result = oneclass("extract-patches", "--set", "dataset.normall=3", "--out", tmp_path / "o")
    assert result.returncode == 2
    assert "dataset.normall: unknown key (did you mean 'dataset.normal'?)" in result.stderr


def test_recipe_drives_extraction_and_flags_win(tmp_path):
    path = _write(tmp_path, "seed: 1\ndataset:\n  name: synthetic\n  normal: 2\n  anomalous: 2\n"
                            "  height: 64\n  width: 64\npatches:\n  size: 32\n  stride: 16\n")
    result = oneclass("extract-patches", path, "--size", 16, "--set", "patches.resize=8",
                      "--out", tmp_path / "s", "-q")
    assert result.returncode == 0, result.stderr
    from oneclass.data.store import PatchStore

    store = PatchStore.open(tmp_path / "s")
    assert store.meta["params"]["size"] == 16 and store.meta["params"]["stride"] == 16
    assert store.images.shape == (4 * 16, 1, 8, 8)
    assert store.meta["recipe"]["patches"]["resize"] == 8


def test_a_method_block_applies_only_to_its_method():
    from oneclass.training import method_class

    data = {"method": {"name": "ss-dcae", "deep-sad": {"pretrain_epochs": 3}, "ss-dcae": {"margin": 0.2},
                       "eta": 2.0}}
    cls, params = method_class(recipes.from_dict(data, "r.yaml"))
    assert cls.name == "ss-dcae" and params.margin == 0.2 and params.eta == 2.0
    data["method"]["name"] = "deep-sad"
    cls, params = method_class(recipes.from_dict(data, "r.yaml"))
    assert params.pretrain_epochs == 3 and params.eta == 2.0
    data["method"]["deep-sad"] = {"margin": 0.1}
    with pytest.raises(OneclassError, match=r"r.yaml: method.deep-sad.margin: unknown key"):
        method_class(recipes.from_dict(data, "r.yaml"))
    data["method"]["deep-sad"] = 5
    with pytest.raises(OneclassError, match=r"method.deep-sad: expected a mapping"):
        method_class(recipes.from_dict(data, "r.yaml"))


def test_a_set_on_one_methods_block_leaves_the_blocks_sharing_its_yaml_anchor_alone():
    """busi.yaml writes the gVAE family's blocks once (``ss-gvae: *gvae``)."""
    from oneclass.training import method_class

    config = recipes.load("recipes/busi.yaml", ["method.name=c-ss-ms-gvae", "method.ss-gvae.epochs.semi=9"])
    assert method_class(config)[1].epochs.semi == 4
    assert config.method.params["ss-gvae"]["epochs"]["semi"] == 9
    assert "*" not in config.to_yaml() and "&" not in config.to_yaml()  # the run's recipe.yaml spells each out


def test_a_key_given_twice_in_a_recipe_is_refused(tmp_path):
    path = _write(tmp_path, "train:\n  epochs: 5\nsplit:\n  gamma: 0.1\ntrain:\n  lr: 1.0e-3\n")
    with pytest.raises(OneclassError, match=r"r.yaml: invalid YAML at line 5: key 'train' given twice \(first at line 1\)"):
        recipes.load(path)
    # keys merged in with <<: may be overridden, as YAML means
    path.write_text("method:\n  name: ss-dcae\n  ss-dcae:\n    <<: &base {margin: 0.5, eta: 1.0}\n    margin: 0.2\n")
    assert recipes.load(path).method.params["ss-dcae"] == {"margin": 0.2, "eta": 1.0}


def test_a_set_block_key_that_the_files_plain_key_overrides_is_refused_not_ignored(tmp_path):
    from oneclass.training import method_class

    path = _write(tmp_path, "method:\n  name: deep-sad\n  rep_dim: 32\n  deep-sad: {eta: 2.0}\n")
    assert method_class(recipes.load(path))[1].rep_dim == 32
    for item in ("method.deep-sad.rep_dim=64", "method.deep-sad={rep_dim: 48}"):
        with pytest.raises(OneclassError, match=rf"--set '{re.escape(item)}': .*r.yaml sets method.rep_dim, which "
                                                rf"wins over method.deep-sad.rep_dim .*set method.rep_dim instead"):
            method_class(recipes.load(path, [item]))
    # a block key the file's plain keys leave alone, or both on the command line: as before
    assert method_class(recipes.load(path, ["method.deep-sad.eta=3"]))[1].eta == 3
    assert method_class(recipes.load(path, ["method.deep-sad.rep_dim=64", "method.rep_dim=16"]))[1].rep_dim == 16


def test_every_methods_block_is_checked_not_only_the_chosen_ones(tmp_path):
    from oneclass.training import check_other_blocks, train_run

    path = _write(tmp_path, "method:\n  name: deep-sad\n")
    config = recipes.load(path, ["method.ss-dcae.marginn=1"])
    with pytest.raises(OneclassError, match=r"--set 'method.ss-dcae.marginn=1': method.ss-dcae.marginn: unknown key"):
        check_other_blocks(config)
    with pytest.raises(OneclassError, match=r"method.ss-dcae.marginn: unknown key"):  # before any store is cut
        train_run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_plain_nested_keys_override_a_block_key_by_key(tmp_path):
    from oneclass.training import method_class

    path = tmp_path / "r.yaml"
    path.write_text("method:\n  name: ss-ms-gvae\n  ss-ms-gvae: {epochs: {mean: 4, scale: 2, semi: 5}}\n")
    _, params = method_class(recipes.load(path, ["method.epochs.semi=8"]))
    assert (params.epochs.mean, params.epochs.scale, params.epochs.semi, params.epochs.shape) == (4, 2, 8, None)
    with pytest.raises(OneclassError, match=r"method.epochs.sem: unknown key \(did you mean 'method.epochs.semi'"):
        method_class(recipes.load(path, ["method.epochs.sem=8"]))


@pytest.mark.parametrize("text,message", [
    ("train:\n  epochs: 0\n", "r.yaml: train.epochs: must be >= 1, got 0"),
    ("train:\n  epochs: -1\n", "r.yaml: train.epochs: must be >= 1, got -1"),
    ("train:\n  batch_size: 0\n", "r.yaml: train.batch_size: must be >= 1, got 0"),
    ("train:\n  lr: -1\n", "r.yaml: train.lr: must be > 0, got -1.0"),
    ("train:\n  lr_milestones: [5, 0]\n", "r.yaml: train.lr_milestones: must be >= 1, got 0"),
    ("split:\n  gamma: 0.6\n", "r.yaml: split.gamma: must be in [0, 0.5], got 0.6"),
    ("split:\n  val_fraction: 0\n", "r.yaml: split.val_fraction: must be in (0, 1), got 0.0"),
    ("patches:\n  mask_frac: 0\n", "r.yaml: patches.mask_frac: must be in (0, 1], got 0.0"),
    ("patches:\n  channels: 4\n", "r.yaml: patches.channels: must be in [1, 3], got 4"),
    ("seed: -2\n", "r.yaml: seed: must be in [0, 4294967295], got -2"),
    ("seed: 4294967296\n", "r.yaml: seed: must be in [0, 4294967295], got 4294967296"),
    ("evaluate:\n  image_topk: 0\n", "r.yaml: evaluate.image_topk: must be in (0, 1], got 0.0"),
])
def test_numeric_keys_are_range_checked_at_load(tmp_path, text, message):
    with pytest.raises(recipes.RecipeError) as info:
        recipes.load(_write(tmp_path, text))
    assert str(info.value).endswith(message), str(info.value)


@pytest.mark.parametrize("written,value", [("1e-4", 1e-4), ("1E-4", 1e-4), (".5", 0.5), ("5.", 5.0),
                                           ("+2e-3", 2e-3), ("3", 3.0)])
def test_every_number_a_person_writes_is_a_number(tmp_path, written, value):
    assert recipes.load(_write(tmp_path, f"train:\n  lr: {written}\n")).train.lr == value
    assert recipes.load(None, [f"train.lr={written}"]).train.lr == value


@pytest.mark.parametrize("bad", ["1e-4x", "e5", "1.2.3", "nan"])
def test_strings_that_are_not_numbers_stay_refused(bad):
    with pytest.raises(recipes.RecipeError, match="train.lr: expected a number"):
        recipes.load(None, [f"train.lr={bad}"])


def test_errors_name_the_option_that_set_the_key(tmp_path):
    path = _write(tmp_path, "train:\n  lr: 0.1\n")
    cases = [(["train.lr=abc"], {}, "--set 'train.lr=abc': train.lr: expected a number"),
             (["train.epochs=0"], {}, "--set 'train.epochs=0': train.epochs: must be >= 1"),
             (["trian.lr=1"], {}, "--set 'trian.lr=1': trian: unknown key (did you mean 'train'?)"),
             ([], {"train.batch_size": 0}, "--batch-size: train.batch_size: must be >= 1")]
    for sets, values, message in cases:
        with pytest.raises(recipes.RecipeError) as info:
            recipes.load(path, sets, values, {k: "--batch-size" for k in values})
        assert str(info.value).startswith(message), str(info.value)
    with pytest.raises(recipes.RecipeError, match=r"^.*r\.yaml: train\.epochs: must be >= 1"):
        recipes.load(_write(tmp_path, "train:\n  epochs: 0\n"), ["train.lr=0.5"])  # the file's own key


def test_cli_names_the_flag_not_the_recipe(tmp_path):
    result = oneclass("train", "recipes/demo.yaml", "--set", "train.epochs=0", "--out", tmp_path / "r",
                      cwd=__import__("pathlib").Path(__file__).resolve().parents[1])
    assert result.returncode == 2
    assert result.stderr.strip() == "oneclass: error: --set 'train.epochs=0': train.epochs: must be >= 1, got 0"
    assert not (tmp_path / "r").exists() and not (tmp_path / "r.partial").exists()


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed: seeds must be in [0, 4294967295], got -1"),
    (["--seed", "4294967295", "--repeats", "2"], "--seed: seeds must be in [0, 4294967295], got 4294967295 to 4294967296"),
    (["--set", "split.labeled_anomalies=5"], "--set 'split.labeled_anomalies=5': split.labeled_anomalies: give either"),
    (["--set", "method.name=deep-sadd"], "--set 'method.name=deep-sadd': unknown method 'deep-sadd'"),
])
def test_train_refuses_before_any_work_naming_the_flag(tmp_path, args, message):
    env = {"ONECLASS_CACHE": str(tmp_path / "cache")}
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    one_error_line(oneclass("train", "recipes/demo.yaml", "--out", tmp_path / "run", *args, env=env, cwd=repo), 2,
                   message)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()  # no store was cut


def test_a_root_for_a_dataset_that_reads_none_is_refused(tmp_path):
    one_error_line(oneclass("extract-patches", "--root", tmp_path, "--out", tmp_path / "s"), 2,
                   "--root: dataset.root: dataset 'synthetic' makes its images and reads no folder")


def test_numbers_read_as_written_not_as_yaml_1_1_octal_or_base_60(tmp_path):
    """YAML 1.1 reads 010 as 8 and 1:30 as 90, and 1e-3 as a string; a recipe reads
    numbers as YAML 1.2 does, and a leading zero keeps a scalar a string."""
    path = _write(tmp_path, "seed: 11\ntrain:\n  epochs: 0o10\n  batch_size: 0x20\n  lr: 1e-3\n")
    config = recipes.load(path, ["split.test_size=4_0"])
    assert (config.seed, config.train.epochs, config.train.batch_size, config.split.test_size) == (11, 8, 32, 40)
    assert config.train.lr == 1e-3
    for text in ("seed: 010", "train:\n  epochs: 1:30"):
        path.write_text(text + "\n")
        with pytest.raises(OneclassError, match=r"r.yaml: (seed|train.epochs): expected an integer, got string"):
            recipes.load(path)
    from oneclass.sweep import point_config

    assert point_config(path, ["train.epochs=3"], {"seed": "12"}).seed == 12
    with pytest.raises(OneclassError, match=r"--grid seed='010'.*expected an integer, got string '010'"):
        point_config(path, ["train.epochs=3"], {"seed": "010"})


def test_a_runs_recipe_copy_reads_back_as_written_by_either_yaml(tmp_path):
    """Strings that look like numbers to YAML 1.1 (1:30) or to the recipe reader (1e-4)
    are quoted, so plain safe_load and recipes.load read the same recipe back."""
    import yaml

    config = recipes.load(None, ["dataset.root=09", "description='1e-4'", "method.deep-sad={tag: '1:30'}"])
    assert config.dataset.root == "09"
    text = config.to_yaml()
    assert yaml.safe_load(text) == recipes.parse_yaml(text) == config.to_dict()
    # keys added later, at their defaults: runs and sweeps recorded before compare equal
    for key in ("bits", "val_anomalies", "val_subclasses", "monitor"):
        assert key not in text
    asked = recipes.load(None, ["train.monitor=normal_score", "split.val_anomalies=5"]).to_dict()
    assert asked["train"]["monitor"] == "normal_score" and asked["split"]["val_anomalies"] == 5


def test_runs_told_apart_by_a_key_added_later_name_its_default_not_unset():
    """evaluate's variant names fill in defaults: a run at train.monitor's default reads
    auroc beside one at normal_score, though neither record holds the default."""
    from oneclass.report import _settings

    recorded = recipes.load(None, ["method.name=deep-sad"]).to_dict()
    assert "monitor" not in recorded["train"]
    assert _settings(recorded, effective=True)["train.monitor"] == "auroc"
