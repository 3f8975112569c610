"""Every user mistake: one line on stderr naming the file or flag, exit 2, nothing written.

Catalogue of bad inputs (issue 16, "Hardening and first-hour experience")

Each case of the issue (its items split into their cases, numbered by item), then the
cases found on the way (marked +) and the bad inputs handled before the issue (B), each
with the bad input, what oneclass does, and the tests that feed it (after ->). Exit
status: 2 bad input, 1 a destination that cannot be written, 130 Ctrl-C. Unless the row
says otherwise the answer is one "oneclass: error:" line on stderr and nothing is
written, deleted or left half-written (no OUT, OUT.partial, .tmp or .old- names).
test_the_catalogue_names_real_tests checks that every test named here exists.

case  bad input                                    expected
----  -------------------------------------------  -------------------------------------------------
Data safety
1a    extract-patches --out an unrelated folder,   2, "a folder oneclass did not write"; its files kept
      with or without --overwrite
      -> tests/test_data_safety.py::test_extract_refuses_a_folder_it_did_not_write
1b    train --overwrite --out an unrelated folder  2 before any work; its files kept
      -> tests/test_data_safety.py::test_train_overwrite_refuses_an_unrelated_folder_before_any_work
1c    train --overwrite where OUT.partial is an    2, "not an unfinished oneclass run"; its files kept
      unrelated folder
      -> tests/test_data_safety.py::test_train_overwrite_refuses_an_unrelated_partial_folder
1d    extract-patches --overwrite --out a run      2, "is a oneclass run folder"; the run kept
      -> tests/test_data_safety.py::test_extract_refuses_a_run_folder
1e    train --overwrite --out a patch store, or    2, "a oneclass store folder" / "a folder oneclass
      train / extract-patches --overwrite --out    did not write"; the store and the runs kept
      the folder that holds other runs
      -> tests/test_bad_input.py::test_overwrite_refuses_a_store_and_a_folder_of_runs
1f    --overwrite of a run, the new recipe or      2; the old run unchanged, no OUT.partial left
      data failing validation
      -> tests/test_data_safety.py::test_a_failing_overwrite_keeps_the_old_run
      -> tests/test_bad_input.py::test_numeric_recipe_keys_out_of_range_stop_train
1g+   explain --out OUT where OUT.partial is an    2, "not an unfinished oneclass maps folder"; its
      unrelated folder (or OUT a run)              files kept
      -> tests/test_pipeline.py::test_explain_draws_the_most_anomalous_items_beside_their_maps
2a    train / extract-patches --overwrite --out    2 up front (not after training), "exists and is
      an existing file                             not a folder"; the file kept
      -> tests/test_data_safety.py::test_out_naming_a_file_is_refused_before_any_work
2b+   score -o / tsne -o / evaluate --plot naming  2, "is a folder; name the file to write" / "not a
      a folder, or a path under a file             folder, so nothing can be written under it"
      -> tests/test_bad_input.py::test_an_output_file_naming_a_folder_or_a_path_under_a_file
3a    train on a full disk                         1, names OUT.partial and "No space left on
                                                   device"; no unfinished run kept without checkpoint
      -> tests/test_data_safety.py::test_train_on_a_full_disk
3b    train into a read-only place                 1, "not writable", before any work
      -> tests/test_data_safety.py::test_train_into_a_read_only_place_is_refused_before_any_work
3c    score -o on a full or read-only disk         1, names the path, "No space left on device" /
                                                   "not writable"; no .tmp file left
      -> tests/test_data_safety.py::test_score_evaluate_tsne_outputs[full]
      -> tests/test_data_safety.py::test_score_evaluate_tsne_outputs[read-only]
3d    evaluate --plot on a full or read-only disk  as 3c (the same tests)
      -> tests/test_data_safety.py::test_score_evaluate_tsne_outputs
3e    tsne -o on a full or read-only disk          as 3c (the same tests)
      -> tests/test_data_safety.py::test_score_evaluate_tsne_outputs
3f+   extract-patches on a full disk               1, "cannot write the patch store: No space left on
                                                   device"; nothing left
      -> tests/test_data_safety.py::test_extract_on_a_full_disk
3g+   extract-patches into a read-only place       1, "not writable"; nothing written
      -> tests/test_bad_input.py::test_extract_into_a_read_only_place
3h    train on a cold store cache that cannot be   1, "not writable"; no run folder begun
      written (ONECLASS_CACHE read-only)
      -> tests/test_bad_input.py::test_train_with_a_read_only_store_cache
4     train --store cut with other patch or        2, names each differing key with both values
      dataset keys than the recipe's
      -> tests/test_data_safety.py::test_store_cut_otherwise_than_the_recipe_says_is_refused
Bad values
5a    recipe train.epochs: 0                       2, "r.yaml: train.epochs: must be >= 1, got 0"; in
                                                   5a-5d an old run given to --overwrite stays as it
                                                   was (test_recipe.py: every key, in-process)
      -> tests/test_bad_input.py::test_numeric_recipe_keys_out_of_range_stop_train[epochs-0]
      -> tests/test_recipe.py::test_numeric_keys_are_range_checked_at_load
5b    recipe train.epochs: -1                      2, "train.epochs: must be >= 1, got -1"
      -> tests/test_bad_input.py::test_numeric_recipe_keys_out_of_range_stop_train[epochs-minus-1]
      -> tests/test_recipe.py::test_numeric_keys_are_range_checked_at_load
5c    recipe train.batch_size: 0                   2, "train.batch_size: must be >= 1, got 0"
      -> tests/test_bad_input.py::test_numeric_recipe_keys_out_of_range_stop_train[batch_size-0]
      -> tests/test_recipe.py::test_numeric_keys_are_range_checked_at_load
5d    recipe train.lr: -1                          2, "train.lr: must be > 0, got -1.0"
      -> tests/test_bad_input.py::test_numeric_recipe_keys_out_of_range_stop_train[lr-minus-1]
      -> tests/test_recipe.py::test_numeric_keys_are_range_checked_at_load
6     1e-4, 1E-4, .5, 5., +2e-3 in a recipe or in  read as numbers; "1e-4x", "e5", "1.2.3", "nan"
      --set                                        still refused as "expected a number"
      -> tests/test_recipe.py::test_every_number_a_person_writes_is_a_number
      -> tests/test_recipe.py::test_strings_that_are_not_numbers_stay_refused
7a    --set (or a flag) giving a bad value         2, the line names --set 'KEY=VALUE' (or the
                                                   flag), not the recipe file
      -> tests/test_recipe.py::test_errors_name_the_option_that_set_the_key
      -> tests/test_recipe.py::test_cli_names_the_flag_not_the_recipe
7b    score / tsne --device bogus                  2, "--device: unknown device 'bogus'" (not
                                                   train.device); nothing written
      -> tests/test_bad_input.py::test_score_and_tsne_device_errors_name_the_flag
7c+   train --device bogus, --set                  2, one line naming the flag, the --set item or
      train.device=bogus, recipe device: bogus     the file, before any output
      -> tests/test_bad_input.py::test_train_device_errors_name_what_set_it
8a    --resume from a truncated (or empty)         2, "cannot read the checkpoint: truncated or
      checkpoint                                   damaged"; the unfinished run kept as it was
      -> tests/test_pipeline.py::test_resuming_from_a_damaged_checkpoint_is_one_line
      -> tests/test_bad_input.py::test_resuming_from_a_damaged_checkpoint_keeps_the_unfinished_run
8b    --resume from a foreign checkpoint, or one   2, "not a oneclass checkpoint"; a payload never
      that unpickles into a shell command          runs, "weights_only" never suggested
      -> tests/test_pipeline.py::test_resuming_from_a_damaged_checkpoint_is_one_line
      -> tests/test_bad_input.py::test_resuming_from_a_damaged_checkpoint_keeps_the_unfinished_run
8c    score / tsne a run whose model.pt is         2, "cannot read the model: truncated or damaged";
      truncated or empty                           the run folder unchanged
      -> tests/test_pipeline.py::test_a_damaged_or_foreign_model_is_one_line
      -> tests/test_bad_input.py::test_a_damaged_foreign_or_booby_trapped_model_is_not_loaded
8d    a malicious model.pt (pickled objects, a     2, "not a oneclass model: it holds objects other
      shell command); a foreign one                than tensors" / "(no format, ...)"; nothing run
      -> tests/test_pipeline.py::test_a_damaged_or_foreign_model_is_one_line
      -> tests/test_bad_input.py::test_a_damaged_foreign_or_booby_trapped_model_is_not_loaded
8e    a corrupted recipe.yaml in a run folder      2, "recipe.yaml: damaged (not a YAML mapping of
                                                   recipe sections)"
      -> tests/test_pipeline.py::test_a_damaged_recipe_in_a_run_folder_is_one_line
9a    a TIFF whose tag runs past the end of the    0, the pixels read, stderr empty (Pillow's
      file                                         UserWarning silenced)
      -> tests/test_bad_input.py::test_reader_warnings_do_not_reach_stderr
9b+   the same TIFF with its pixels truncated      2, one line "cannot read image"; tifffile's log
                                                   line silenced
      -> tests/test_bad_input.py::test_a_damaged_tiff_is_one_line
10a   Ctrl-C during training, after a checkpoint   130, one line naming the checkpoint and the exact
                                                   command that resumes; that command finishes
      -> tests/test_data_safety.py::test_ctrl_c_names_the_checkpoint_and_the_command_that_resumes
10b+  Ctrl-C during training, before the first    130, "nothing was kept"; no OUT, no OUT.partial
      checkpoint
      -> tests/test_bad_input.py::test_ctrl_c_before_the_first_checkpoint_keeps_nothing
10c+  Ctrl-C during extract-patches                130 and one "oneclass: interrupted" line; no
                                                   store or temporary folder left
      -> tests/test_bad_input.py::test_ctrl_c_during_extraction_is_one_line
10d   Ctrl-C while a finished run moves into     the partial run keeps its checkpoint; --resume
      place                                        moves it, training nothing again
      -> tests/test_bad_input.py::test_ctrl_c_while_a_finished_run_moves_into_place_leaves_it_to_resume
First hour
11a   --out a/b where a does not exist             the parents are created (train, extract-patches)
      -> tests/test_data_safety.py::test_train_overwrite_replaces_its_own_run
      -> tests/test_bad_input.py::test_out_with_missing_parents_is_created
11b   the README's Python example                  runs as written in a fresh interpreter
      -> tests/test_api.py::test_readme_python_example_runs
11c+  the README's set-up training command and     run verbatim in a new bash, `oneclass` on PATH
      first-hour shell block                       as activating the venv puts it
      -> tests/test_api.py::test_readme_first_hour_commands_run_verbatim
12a   man pages and --help disagree (<bool>, no    one source; sections in order, exit codes 0 1 2
      EXAMPLES / EXIT STATUS / ENVIRONMENT /       130, flags as flags, examples real commands
      FILES)
      -> tests/test_manpages.py::test_man_pages_match_the_cli
      -> tests/test_manpages.py::test_each_page_has_its_sections_in_order
      -> tests/test_manpages.py::test_exit_codes_are_listed
      -> tests/test_manpages.py::test_flags_render_as_flags
      -> tests/test_manpages.py::test_help_shows_flags_as_flags_too
      -> tests/test_manpages.py::test_every_help_section_is_in_the_man_page
      -> tests/test_manpages.py::test_examples_are_real_commands
12b   list methods -v                              a table of the params each method uses, their
                                                   defaults and meaning; no reprs
      -> tests/test_registry_cli.py::test_verbose_method_listing_is_a_table_of_used_parameters
12c+  a mistyped command line (unknown flag or     2, one line naming the flag and COMMAND --help
      command, missing argument)                   (not click's three lines)
      -> tests/test_bad_input.py::test_a_mistyped_command_line_is_one_line
13a   the t-SNE figure                             legend beside the axes, off the points; title
                                                   with the threshold and "N of M points"
      -> tests/test_bad_input.py::test_tsne_figure_keeps_the_legend_off_the_points
      -> tests/test_pipeline.py::test_tsne_subsamples_to_max_points_within_each_class
13b   AUROC against gamma with a single gamma      a bar per method, the chance line, the number
                                                   of runs in the legend; lines for several gammas
      -> tests/test_bad_input.py::test_auc_against_one_gamma_is_a_bar_per_method
13c+  evaluate --plot of score files only, or not  2, "needs run folders" / "expected a .png file
      naming a .png                                name"; no figure written
      -> tests/test_bad_input.py::test_evaluate_plot_needs_run_folders_and_a_png
14    score --format jsonl                         ids, coordinates and labels as JSON numbers
      -> tests/test_pipeline.py::test_jsonl_scores_write_numbers_as_numbers
15    masks with stray values 1-254                2, names patches.mask_threshold (--mask-threshold);
                                                   with it the store is cut, recorded in its meta
      -> tests/test_bad_input.py::test_noisy_mask_is_refused_naming_the_way_out_and_taken_with_a_threshold
Handled before the issue
B1    extract-patches --root that does not exist   2, "dataset root not found"
      -> tests/test_bad_input.py::test_missing_root
B2    an unknown dataset name                      2, with "did you mean"
      -> tests/test_bad_input.py::test_unknown_dataset_suggests
B3    a mask of another size than its image, one   2, names the mask file
      not binary, or missing
      -> tests/test_bad_input.py::test_mask_size_differs
      -> tests/test_bad_input.py::test_mask_values_not_binary
      -> tests/test_bad_input.py::test_missing_mask_in_folder_layout
B4    a truncated or broken image, also midway     2, "cannot read image"; no store, no .tmp
      -> tests/test_bad_input.py::test_truncated_image
      -> tests/test_bad_input.py::test_failure_midway_leaves_no_store
B5    no images; a patch larger than the image     2, "no images found" / "larger than the image"
      -> tests/test_bad_input.py::test_empty_dataset
      -> tests/test_bad_input.py::test_no_images_fails_and_a_one_patch_store_is_valid
      -> tests/test_bad_input.py::test_patch_larger_than_image
B6    --stride 0 / -3, --mask-frac 0 / 1.5,        2, names the flag, the key and its range
      --channels 2, --level on plain images
      -> tests/test_bad_input.py::test_bad_flags
      -> tests/test_bad_input.py::test_level_on_a_plain_image_dataset
B7    --whole-image with --size / --stride, no     2, names the flag
      --resize, or on whole-slide images
      -> tests/test_bad_input.py::test_whole_image_flags
      -> tests/test_bad_input.py::test_whole_image_refuses_slides
B8    recipe typos, wrong types, invalid YAML, a   2, names the file and the key, "did you mean";
      !!python tag                                 YAML loaded safely
      -> tests/test_recipe.py::test_errors_name_file_and_key
      -> tests/test_recipe.py::test_yaml_is_loaded_safely
B9    train: a method typo, gamma 0.7, an unseen   2, one line naming the key
      subclass, binclass without labels
      -> tests/test_pipeline.py::test_bad_training_requests
B10   a run folder missing model.pt or of an old   2, "incomplete run folder" / "run format 0"
      format; patches of another shape; an empty   / "patches are 3 x 32 x 32" / "empty score file";
      score file; images of another channel count  images converted as extraction converts, said
      -> tests/test_pipeline.py::test_bad_run_folders
      -> tests/test_pipeline.py::test_scoring_patches_of_another_shape_fails
      -> tests/test_pipeline.py::test_an_image_with_other_channels_is_scored_converted_as_extraction_converts
      -> tests/test_pipeline.py::test_empty_score_file_fails
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_RECIPE, one_error_line, oneclass, sigint_as_at_a_terminal

ROOT = Path(__file__).resolve().parents[1]


def _folder(root, image_size=(40, 40), mask=None, mask_size=None):
    (root / "normal").mkdir(parents=True)
    (root / "anomalous" / "crack").mkdir(parents=True)
    Image.fromarray(np.zeros(image_size, np.uint8)).save(root / "normal" / "a.png")
    Image.fromarray(np.zeros(image_size, np.uint8)).save(root / "anomalous" / "crack" / "b.png")
    if mask is None:
        mask = np.zeros(mask_size or image_size, np.uint8)
        mask[:10, :10] = 255
    Image.fromarray(mask).save(root / "anomalous" / "crack" / "b_mask.png")
    return root


def _fails(tmp_path, *args, expect):
    out = tmp_path / "out"
    result = oneclass("extract-patches", *args, "--out", out)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oneclass: error:"), result.stderr
    assert expect in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    return result


def test_missing_root(tmp_path):
    _fails(tmp_path, "-d", "folder", "--root", tmp_path / "nowhere", expect="nowhere: dataset root not found")


def test_unknown_dataset_suggests(tmp_path):
    _fails(tmp_path, "-d", "nanofiber", expect="unknown dataset 'nanofiber' (did you mean 'nanofibre'?)")


def test_mask_size_differs(tmp_path):
    root = _folder(tmp_path / "d", mask_size=(40, 39))
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 8,
           expect="b_mask.png: mask size 39x40 does not match")


def test_mask_values_not_binary(tmp_path):
    mask = np.zeros((40, 40), np.uint8)
    mask[0, 0] = 7
    root = _folder(tmp_path / "d", mask=mask)
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 8, expect="b_mask.png: mask values must be")


def test_truncated_image(tmp_path):
    root = _folder(tmp_path / "d")
    path = root / "normal" / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 8, expect="a.png: cannot read image")


def test_empty_dataset(tmp_path):
    (tmp_path / "d" / "normal").mkdir(parents=True)
    _fails(tmp_path, "-d", "folder", "--root", tmp_path / "d", expect="no images found")


def test_patch_larger_than_image(tmp_path):
    root = _folder(tmp_path / "d")
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 41,
           expect="patch size 41 is larger than the image")


@pytest.mark.parametrize("flag,value,expect", [
    ("--stride", "0", "--stride: patches.stride: must be >= 1, got 0"),
    ("--stride", "-3", "--stride: patches.stride: must be >= 1, got -3"),
    ("--mask-frac", "0", "--mask-frac: patches.mask_frac: must be in (0, 1], got 0.0"),
    ("--mask-frac", "1.5", "--mask-frac: patches.mask_frac: must be in (0, 1], got 1.5"),
    ("--channels", "2", "--channels: must be 1 or 3"),
])
def test_bad_flags(tmp_path, flag, value, expect):
    _fails(tmp_path, flag, value, expect=expect)


def test_level_on_a_plain_image_dataset(tmp_path):
    _fails(tmp_path, "--level", "1", expect="--level: dataset 'synthetic' has no pyramid levels")


def test_missing_mask_in_folder_layout(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "anomalous" / "crack" / "b_mask.png").unlink()
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 8, expect="b.png: no mask found")


def test_failure_midway_leaves_no_store(tmp_path):
    root = _folder(tmp_path / "d")
    # the second image is broken: the first was already extracted when it fails
    (root / "normal" / "z.png").write_bytes(b"not a png")
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 8, expect="z.png: cannot read image")


def test_no_images_fails_and_a_one_patch_store_is_valid(tmp_path):
    from oneclass.data.store import PatchStore

    result = oneclass("extract-patches", "--set", "dataset.normal=0", "--set", "dataset.anomalous=0",
                      "--out", tmp_path / "s", "-q")
    assert result.returncode == 2 and "no images found" in result.stderr
    root = tmp_path / "d"
    (root / "normal").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "normal" / "a.png")
    result = oneclass("extract-patches", "-d", "folder", "--root", root, "--size", 16,
                      "--max-per-image", 1, "--out", tmp_path / "one", "-q")
    assert result.returncode == 0, result.stderr
    store = PatchStore.open(tmp_path / "one")
    assert len(store) == 1 and store.images.shape == (1, 1, 16, 16)


@pytest.mark.parametrize("args,expect", [
    (["--whole-image", "--resize", "32", "--size", "16"], "--size: not used with --whole-image"),
    (["--whole-image", "--resize", "32", "--stride", "16"], "--stride: not used with --whole-image"),
    (["--whole-image"], "--resize: --whole-image needs the side of the square"),
])
def test_whole_image_flags(tmp_path, args, expect):
    _fails(tmp_path, *args, expect=expect)


def test_whole_image_refuses_slides(tmp_path):
    from oneclass.data.datasets.synthetic import write_synthetic_slide

    (tmp_path / "slides").mkdir()
    write_synthetic_slide(tmp_path / "slides" / "tumor_001.tif", 512, 512, tile=256)
    _fails(tmp_path, "-d", "camelyon16", "--root", tmp_path / "slides", "--whole-image", "--resize", "32",
           expect="--whole-image: dataset 'camelyon16' holds whole-slide images")


def test_noisy_mask_is_refused_naming_the_way_out_and_taken_with_a_threshold(tmp_path):
    from oneclass.data.store import PatchStore

    mask = np.zeros((40, 40), np.uint8)
    mask[:10, :10] = 255
    mask[10, :10] = 37  # an anti-aliased edge
    mask[20, 20] = 3  # compression noise
    root = _folder(tmp_path / "d", mask=mask)
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 10,
           expect="b_mask.png: mask values must be {0, 1} or {0, 255}, found 0, 3, 37, 255; if the "
                  "others are edge or compression noise, set patches.mask_threshold (--mask-threshold")
    done = oneclass("extract-patches", "-d", "folder", "--root", root, "--size", 10, "--mask-frac", 0.5,
                    "--mask-threshold", 128, "--out", tmp_path / "s", "-q")
    assert done.returncode == 0, done.stderr
    store = PatchStore.open(tmp_path / "s")
    anomalous = [(r["source"], r["x"], r["y"]) for r in store.index if r["label"] == "1"]
    assert anomalous == [("anomalous/crack/b.png", "0", "0")]  # 37 and 3 are below 128
    assert store.meta["params"]["mask_threshold"] == 128
    low = oneclass("extract-patches", "-d", "folder", "--root", root, "--size", 10, "--mask-frac", 0.01,
                   "--mask-threshold", 2, "--out", tmp_path / "t", "-q")
    assert low.returncode == 0, low.stderr
    labels = {(r["x"], r["y"]): r["label"] for r in PatchStore.open(tmp_path / "t").index
              if r["source"] == "anomalous/crack/b.png"}
    assert labels[("0", "10")] == "1" and labels[("20", "20")] == "1"  # the edge row and the speck
    _fails(tmp_path, "-d", "folder", "--root", root, "--mask-threshold", 0,
           expect="--mask-threshold: patches.mask_threshold: must be in [1, 65535], got 0")


def _tiff_with_a_tag_past_the_end(path, keep: int | None = None) -> None:
    """A 40 x 40 TIFF whose ImageDescription tag says its data runs a million bytes past
    the end of the file (Pillow warns and still reads the pixels); ``keep``: cut the file
    to that many bytes (the tags stay, the pixels are lost)."""
    import struct

    from PIL import TiffImagePlugin

    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[270] = "x" * 20  # ImageDescription
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(path, tiffinfo=tags)
    data = bytearray(path.read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack("<H", data[ifd:ifd + 2])[0], 12):
        if struct.unpack("<H", data[entry:entry + 2])[0] == 270:
            data[entry + 4:entry + 8] = struct.pack("<I", 10**6)  # a million bytes of description
    path.write_bytes(bytes(data[:keep]))


def test_reader_warnings_do_not_reach_stderr(tmp_path):
    """A TIFF with a corrupt tag (its data said to run past the end of the file): Pillow
    warns and reads the pixels; the user sees only oneclass's own output."""
    root = _folder(tmp_path / "d")
    path = root / "normal" / "a.tif"
    _tiff_with_a_tag_past_the_end(path)
    with pytest.warns(UserWarning, match="Tag data larger than file"):
        with Image.open(path) as im:
            im.load()  # the file does make Pillow warn
    done = oneclass("extract-patches", "-d", "folder", "--root", root, "--size", 8, "--out", tmp_path / "s",
                    "-q")
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_a_damaged_tiff_is_one_line(tmp_path):
    """The TIFF of test_reader_warnings_do_not_reach_stderr with its pixels cut off: Pillow
    gives up, tifffile tries and fails; the user sees one line naming the file."""
    root = _folder(tmp_path / "d")
    _tiff_with_a_tag_past_the_end(root / "normal" / "c.tif", keep=600)  # the tags, not the pixels
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 8, expect="c.tif: cannot read image")


@pytest.mark.parametrize("args, expect", [
    (["train", "recipes/demo.yaml", "--bogus"], "No such option: --bogus"),
    (["train"], "Missing argument 'recipe'"),
    (["train", "recipes/demo.yaml", "--repeats", "0"], "'--repeats'"),
    (["evaluate", "x", "--plot"], "Option '--plot' requires an argument"),
    (["bogus"], "No such command 'bogus'"),
])
def test_a_mistyped_command_line_is_one_line(args, expect):
    """click's own three lines (Usage, Try, Error) become ours: one line naming the flag
    and the command whose --help tells more, exit 2."""
    result = oneclass(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oneclass: error:"), result.stderr
    assert expect in lines[0] and lines[0].endswith("--help)"), lines[0]


def test_bare_command_groups_still_show_their_help():
    result = oneclass("list")
    assert result.returncode == 2 and result.stderr.startswith("Usage: ")
    assert "Commands:" in result.stderr and "methods" in result.stderr


# -- the catalogue above, and the cases of issue 16 that had no test of their own -------


CATALOGUE_REFERENCE = re.compile(r"tests/(\w+\.py)::(\w+)(\[[^\]\s]*\])?")
CATALOGUE_CASE = re.compile(r"^(\d+[a-z]?\+?|B\d+)\s")


def test_the_catalogue_names_real_tests():
    """Every case of the catalogue names at least one test, every named test is defined in
    its file, and each of the issue's 15 items has a case."""
    table = __doc__[__doc__.index("\ncase  bad input"):]
    cases: dict[str, list[tuple[str, str]]] = {}
    case = None
    for line in table.splitlines():
        found = CATALOGUE_CASE.match(line)
        if found:
            case = found.group(1)
            assert case not in cases, f"case {case} listed twice"
            cases[case] = []
        for reference in CATALOGUE_REFERENCE.finditer(line):
            assert case is not None, line
            cases[case].append(reference.group(1, 2))
    items = {int(re.match(r"\d+", c).group()) for c in cases if c[0].isdigit()}
    assert items == set(range(1, 16)), f"issue items without a case: {sorted(set(range(1, 16)) - items)}"
    assert [c for c, references in cases.items() if not references] == []
    here = Path(__file__).parent
    sources = {}
    for case, references in cases.items():
        for file, name in references:
            if file not in sources:
                assert (here / file).is_file(), f"case {case}: tests/{file} does not exist"
                sources[file] = (here / file).read_text()
            assert re.search(rf"^(async )?def {name}\(", sources[file], re.M), \
                f"case {case}: tests/{file}::{name} is not defined there"


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory) -> Path:
    """A finished run of the tiny store (one epoch, no pretraining)."""
    out = tmp_path_factory.mktemp("bad-input") / "run"
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", out, "-q",
                    "--set", "train.epochs=1", "--set", "method.deep-sad.pretrain_epochs=0")
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
def test_overwrite_refuses_a_store_and_a_folder_of_runs(tiny, run, tmp_path):
    """1e: --overwrite replaces a run, never a patch store nor the folder the runs are in."""
    store = shutil.copytree(tiny["store"], tmp_path / "store")
    runs = tmp_path / "runs"
    shutil.copytree(run, runs / "a")
    before = {folder: _snapshot(folder) for folder in (store, runs)}
    for args, expect in (
        (["train", tiny["recipe"], "--store", store, "--out", store], "is a oneclass store folder"),
        (["train", tiny["recipe"], "--store", store, "--out", runs], "a folder oneclass did not write"),
        (["extract-patches", "--out", runs], "a folder oneclass did not write"),
    ):
        one_error_line(oneclass(*args, "--overwrite"), 2, expect, "remove it yourself")
        assert {folder: _snapshot(folder) for folder in (store, runs)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "store"]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["score", "tsne", "evaluate"])
def test_an_output_file_naming_a_folder_or_a_path_under_a_file(run, tiny, tmp_path, command):
    """2b: the file to write is a folder, or would be under a file: refused up front."""
    args, flag, suffix = {"score": (["score", run, tiny["store"], "-o"], "--output", ".csv"),
                          "tsne": (["tsne", run, "--perplexity", "5", "-o"], "--out", ".png"),
                          "evaluate": (["evaluate", run, "-q", "--plot"], "--plot", ".png")}[command]
    folder = tmp_path / f"out{suffix}"
    folder.mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    one_error_line(oneclass(*args, folder), 2, f"{flag}: {folder} is a folder; name the file to write")
    one_error_line(oneclass(*args, notes / f"x{suffix}"), 2,
             f"{notes}: not a folder, so nothing can be written under it")
    assert list(folder.iterdir()) == [] and notes.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", f"out{suffix}"]


@pytest.fixture
def read_only(tmp_path):
    """A read-only tmpfs mounted under tmp_path (skips where mounting needs root)."""
    where = tmp_path / "ro"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_extract_into_a_read_only_place(read_only):
    """3g: exit 1 and the place named, before any image is read."""
    for out in (read_only / "store", read_only / "a" / "b" / "store"):
        for overwrite in ([], ["--overwrite"]):
            one_error_line(oneclass("extract-patches", "--out", out, *overwrite), 1,
                     f"{read_only}: not writable (read-only file system or no permission)")
    assert list(read_only.iterdir()) == []


def test_train_with_a_read_only_store_cache(read_only, tmp_path):
    """3h: a cold cache that cannot be written (nor its lock made): exit 1 naming it, no
    run folder begun."""
    done = oneclass("train", ROOT / "recipes/demo.yaml", "--out", tmp_path / "run",
                    env={"ONECLASS_CACHE": str(read_only / "cache")})
    one_error_line(done, 1, f"{read_only}: not writable (read-only file system or no permission)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"] and list(read_only.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("old,new,message", [
    ("epochs: 2", "epochs: 0", "train.epochs: must be >= 1, got 0"),
    ("epochs: 2", "epochs: -1", "train.epochs: must be >= 1, got -1"),
    ("batch_size: 64", "batch_size: 0", "train.batch_size: must be >= 1, got 0"),
    ("lr: 0.001", "lr: -1", "train.lr: must be > 0, got -1.0"),
], ids=["epochs-0", "epochs-minus-1", "batch_size-0", "lr-minus-1"])
def test_numeric_recipe_keys_out_of_range_stop_train(tiny, run, tmp_path, old, new, message):
    """5a-5d through the CLI: the recipe file and the key named with the allowed range; no
    run begun, and an old run given to --overwrite stays as it was."""
    assert TINY_RECIPE.count(old) == 1
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY_RECIPE.replace(old, new))
    line = f"oneclass: error: {recipe}: {message}"
    assert one_error_line(oneclass("train", recipe, "--store", tiny["store"], "--out", tmp_path / "new"), 2) == line
    kept = shutil.copytree(run, tmp_path / "kept")
    before = _snapshot(kept)
    again = oneclass("train", recipe, "--store", tiny["store"], "--out", kept, "--overwrite")
    assert one_error_line(again, 2) == line
    assert _snapshot(kept) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "r.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("device", ["bogus", "gpu"])
@pytest.mark.parametrize("command", ["score", "tsne"])
def test_score_and_tsne_device_errors_name_the_flag(run, tiny, tmp_path, command, device):
    """7b: the user typed --device, so the line says --device (not train.device)."""
    args = (["score", run, tiny["store"], "-o", tmp_path / "s.csv"] if command == "score"
            else ["tsne", run, "--perplexity", "5", "-o", tmp_path / "t.png"])
    line = one_error_line(oneclass(*args, "--device", device), 2)
    assert line == f"oneclass: error: --device: unknown device {device!r} (auto, cpu, cuda, cuda:N)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "set", "recipe"])
def test_train_device_errors_name_what_set_it(tiny, tmp_path, how):
    """7c: as every other recipe key, an unknown device is refused at load, naming what
    the user typed: --device, the --set item, or the recipe file."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY_RECIPE.replace("device: cpu", "device: bogus") if how == "recipe" else TINY_RECIPE)
    extra = {"flag": ["--device", "bogus"], "set": ["--set", "train.device=bogus"], "recipe": []}[how]
    named = {"flag": "--device", "set": "--set 'train.device=bogus'", "recipe": str(recipe)}[how]
    done = oneclass("train", recipe, "--store", tiny["store"], "--out", tmp_path / "run", *extra)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]  # nothing begun
    line = one_error_line(done, 2, "train.device: unknown device 'bogus'")
    assert line.startswith(f"oneclass: error: {named}: train.device: "), line


class _Payload:
    """Unpickles into a shell command that creates ``marker``: what a booby-trapped
    .pt file does to whoever loads it without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _damage(kind: str, path: Path, marker: Path) -> None:
    import torch

    if kind == "truncated":
        torch.save({"stage": "train", "epoch": 1, "modules": {"net": {"w": torch.zeros(64, 64)}}}, path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        torch.save({"format": 1, "epoch": 1, "state": _Payload(marker)}, path)


DAMAGE = [("truncated", "cannot read the {what}: truncated or damaged"),
          ("empty", "cannot read the {what}: truncated or damaged"),
          ("foreign", "not a oneclass {what} (no "),
          ("payload", "not a oneclass {what}: it holds objects other than tensors, so it was not loaded")]


@pytest.mark.parametrize("kind,expect", DAMAGE, ids=[kind for kind, _ in DAMAGE])
def test_resuming_from_a_damaged_checkpoint_keeps_the_unfinished_run(tiny, tmp_path, kind, expect):
    """8a, 8b: --resume refuses the checkpoint in one line, before any work, and leaves the
    unfinished run as it was (a payload never runs)."""
    from oneclass import recipe as recipes
    from oneclass.artifacts import mark

    partial = tmp_path / "run.partial"  # an unfinished run of the tiny recipe
    partial.mkdir()
    mark(partial, "run")
    (partial / "recipe.yaml").write_text(recipes.load(tiny["recipe"]).to_yaml())
    marker = tmp_path / "payload-ran"
    _damage(kind, partial / "checkpoint.pt", marker)
    before = _snapshot(partial)
    done = oneclass("train", tiny["recipe"], "--store", tiny["store"], "--out", tmp_path / "run", "--resume")
    one_error_line(done, 2, f"{partial / 'checkpoint.pt'}: {expect.format(what='checkpoint')}")
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert _snapshot(partial) == before and not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.partial"]


@pytest.mark.slow
@pytest.mark.parametrize("kind,expect", DAMAGE, ids=[kind for kind, _ in DAMAGE])
def test_a_damaged_foreign_or_booby_trapped_model_is_not_loaded(run, tiny, tmp_path, kind, expect):
    """8c, 8d: score and tsne refuse the model.pt in one line; a payload never runs and
    the run folder is left as it was."""
    copy = shutil.copytree(run, tmp_path / "run")
    marker = tmp_path / "payload-ran"
    _damage(kind, copy / "model.pt", marker)
    before = _snapshot(copy)
    for args in (["score", copy, tiny["store"], "-o", tmp_path / "s.csv"],
                 ["tsne", copy, "--perplexity", "5", "-o", tmp_path / "t.png"]):
        done = oneclass(*args)
        one_error_line(done, 2, f"{copy / 'model.pt'}: {expect.format(what='model')}")
        assert "Traceback" not in done.stderr and done.stdout == ""
    assert _snapshot(copy) == before and not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def _interrupt(args: list, ready, tmp_path: Path) -> tuple[int, str, str]:
    """Run the CLI, send Ctrl-C (SIGINT) once ``ready()``; (exit status, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "oneclass", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_at_a_terminal)
    try:
        deadline = time.monotonic() + 120
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, stdout, stderr


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    """The tiny store's images cut at stride 4: 8,750 patches, so that a first epoch in
    batches of 2 lasts seconds even on a busy machine."""
    from oneclass.data.datasets.synthetic import SyntheticDataset
    from oneclass.data.extract import ExtractParams, extract

    options = SyntheticDataset.Options(normal=6, anomalous=8, height=128, width=128)
    store, _ = extract(SyntheticDataset(None, options), ExtractParams(size=32, stride=4),
                       tmp_path_factory.mktemp("dense") / "store")
    return store


@pytest.mark.slow
def test_ctrl_c_before_the_first_checkpoint_keeps_nothing(tiny, dense, tmp_path):
    """10b: interrupted while the first epoch runs (thousands of batches of 2): one line,
    exit 130, and the unfinished run without a checkpoint is removed."""
    partial = tmp_path / "run.partial"
    code, stdout, stderr = _interrupt(["train", tiny["recipe"], "--store", dense, "--out",
                                       tmp_path / "run", "-q", "--set", "train.batch_size=2",
                                       "--set", "patches.stride=4"],
                                      partial.is_dir, tmp_path)
    assert code == 130, stderr
    assert stderr.strip() == "oneclass: interrupted before the first checkpoint; nothing was kept"
    assert stdout == "" and list(tmp_path.iterdir()) == []


def test_ctrl_c_right_after_the_run_folder_is_made_keeps_nothing(tiny, tmp_path, monkeypatch):
    """10b, the narrow window the test above can hit by chance (it did, in CI): the signal
    lands between mkdir of OUT.partial and the first write into it."""
    from oneclass import recipe as recipes
    from oneclass import training
    from oneclass.data.store import PatchStore

    def interrupted(path, kind):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "mark", interrupted)
    config = recipes.load(tiny["recipe"])
    with pytest.raises(KeyboardInterrupt):
        training.train_run(config, tmp_path / "run", store=PatchStore.open(tiny["store"]))
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_a_finished_run_moves_into_place_leaves_it_to_resume(tiny, tmp_path, monkeypatch):
    """10d: the run had finished and its checkpoint was gone when the folder moved: the
    partial folder held the whole run, and --resume refused it for want of a checkpoint.
    The checkpoint now goes after the move, and --resume moves a finished partial run."""
    from oneclass import recipe as recipes
    from oneclass import training
    from oneclass.data.store import PatchStore

    moves = []

    def interrupted(built, out, kind):
        moves.append(built)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "replace_folder", interrupted)
    config, store = recipes.load(tiny["recipe"]), PatchStore.open(tiny["store"])
    with pytest.raises(KeyboardInterrupt):
        training.train_run(config, tmp_path / "run", store=store)
    partial = tmp_path / "run.partial"
    assert moves == [partial] and (partial / "metrics.json").is_file() and (partial / "checkpoint.pt").is_file()
    scores = (partial / "scores/test.csv").read_text()
    monkeypatch.undo()
    assert training.train_run(config, tmp_path / "run", store=store, resume=True) == tmp_path / "run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and not (tmp_path / "run/checkpoint.pt").exists()
    assert (tmp_path / "run/scores/test.csv").read_text() == scores  # moved, not trained again


@pytest.mark.slow
def test_ctrl_c_during_extraction_is_one_line(tmp_path):
    """10c: interrupted while patches are written: exit 130, one line, no store and no
    temporary folder left."""
    code, stdout, stderr = _interrupt(["extract-patches", "--set", "dataset.normal=3000", "--set",
                                       "dataset.anomalous=3000", "--out", tmp_path / "store"],
                                      lambda: any(tmp_path.glob(".store.tmp-*")), tmp_path)
    assert list(tmp_path.iterdir()) == [] and stdout == ""
    assert code == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oneclass: interrupted"), stderr


def test_out_with_missing_parents_is_created(tmp_path):
    """11a for extract-patches (train: tests/test_data_safety.py)."""
    out = tmp_path / "a" / "b" / "store"
    done = oneclass("extract-patches", "--set", "dataset.normal=1", "--set", "dataset.anomalous=1",
                    "--out", out, "-q")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.strip() == str(out) and (out / ".oneclass").is_file()


def _drawn(monkeypatch) -> list:
    """The figures oneclass.plots draws, drawn on their canvas and kept instead of saved."""
    from oneclass import plots

    figures = []

    def keep(fig, path):
        fig.canvas.draw()
        figures.append(fig)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_auc_against_one_gamma_is_a_bar_per_method(tmp_path, monkeypatch):
    """13b: with one gamma a bar per method (an axis of one point means nothing); always
    the chance line and the number of runs."""
    from oneclass.plots import auc_vs_gamma

    figures = _drawn(monkeypatch)

    def groups(gammas):
        return [{"dataset": "synthetic", "method": method, "gamma": gamma, "auroc_mean": auroc,
                 "auroc_std": 0.02, "n": 3} for gamma in gammas
                for method, auroc in (("deep-sad", 0.8), ("ss-dcae", 0.7))]

    auc_vs_gamma(groups([0.2]), tmp_path / "one.png")
    ax = figures[-1].axes[0]
    assert len(ax.patches) == 2 and [t.get_text() for t in ax.get_xticklabels()] == ["deep-sad", "ss-dcae"]
    assert ax.get_title() == "synthetic, gamma 0.2"
    assert any(list(line.get_ydata()) == [0.5, 0.5] for line in ax.get_lines())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"deep-sad (n = 3)", "ss-dcae (n = 3)", "chance"} <= set(legend), legend
    table = {"dataset": "", "method": "scores", "gamma": None, "auroc_mean": 0.6, "auroc_std": 0.0, "n": 1}
    auc_vs_gamma(groups([0.05, 0.2]) + [table], tmp_path / "two.png")
    assert len(figures[-1].axes) == 1  # a score table, which has no gamma, draws no empty panel
    ax = figures[-1].axes[0]
    assert len(ax.patches) == 0 and "gamma" in ax.get_xlabel()
    assert any(list(line.get_ydata()) == [0.5, 0.5] for line in ax.get_lines())
    assert list(tmp_path.iterdir()) == []  # kept, not saved


def test_auc_against_gamma_gives_a_method_one_style_in_every_panel_and_each_its_own(tmp_path, monkeypatch):
    """A method missing from one panel does not shift the others' colours there, and past
    the colour cycle's ten methods the styles still differ."""
    from oneclass.plots import auc_vs_gamma

    figures = _drawn(monkeypatch)
    methods = [f"m{i:02d}" for i in range(12)]
    groups = [{"dataset": dataset, "method": method, "gamma": gamma, "auroc_mean": 0.7, "auroc_std": 0.02, "n": 3}
              for dataset in ("a", "b") for method in methods if not (dataset == "b" and method == "m00")
              for gamma in (0.05, 0.2)]
    auc_vs_gamma(groups, tmp_path / "f.png")

    def styles(ax):
        return {bars.get_label(): (bars.lines[0].get_color(), bars.lines[0].get_marker(),
                                   bars.lines[0].get_linestyle()) for bars in ax.containers}

    first, second = (styles(ax) for ax in figures[-1].axes[:2])
    assert len(first) == 12 and len(set(first.values())) == 12
    assert "m00 (n = 3)" not in second
    assert all(second[label] == first[label] for label in second)


def test_tsne_figure_keeps_the_legend_off_the_points(tmp_path, monkeypatch):
    """13a: the legend sits beside the axes, where no point is; the title gives the
    threshold and the subsample size."""
    from oneclass.latent import LatentMap
    from oneclass.plots import tsne_map

    figures = _drawn(monkeypatch)
    points = np.random.default_rng(0).normal(size=(40, 2))
    found = LatentMap(points=points, outcomes=["TP", "FN", "TN", "FP"] * 10, threshold=0.1234,
                      silhouette=0.25, method="deep-sad", total=500)
    title = found.title("test")
    assert "(40 of 500 points)" in title and "equal-error threshold 0.1234" in title, title
    tsne_map(found.points, found.outcomes, title, tmp_path / "t.png")
    ax = figures[-1].axes[0]
    assert ax.get_title() == title
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
    assert [t.get_text() for t in ax.get_legend().get_texts()] == \
        ["TP (anomalous, 10)", "FN (anomalous, 10)", "TN (normal, 10)", "FP (normal, 10)"]


@pytest.mark.slow
def test_evaluate_plot_needs_run_folders_and_a_png(run, tmp_path):
    """13c: AUROC against gamma of score files (which carry no gamma), or into a file that
    is not a .png: refused, no figure."""
    pdf = tmp_path / "auc.pdf"
    one_error_line(oneclass("evaluate", run, "-q", "--plot", pdf), 2, f"--plot: {pdf}: expected a .png file name")
    # without -q too: refused before any table is printed
    one_error_line(oneclass("evaluate", run / "scores" / "test.csv", "--plot", tmp_path / "auc.png"), 2,
             "--plot: AUROC against gamma needs run folders of a split.gamma (score files and few-shot runs "
             "carry none)")
    assert list(tmp_path.iterdir()) == []
