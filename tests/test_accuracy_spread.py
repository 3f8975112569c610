"""benchmarks/accuracy_spread.py: the split x method decomposition that explains the
accuracy table's spread, against hand-computed cases."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy_spread.py"
spec = importlib.util.spec_from_file_location("accuracy_spread", SCRIPT)
spread = importlib.util.module_from_spec(spec)
spec.loader.exec_module(spread)


def test_an_additive_table_has_no_residual_and_its_effects_stds():
    splits = np.array([0.1, -0.1, 0.0, 0.0])  # std (ddof 1): sqrt(0.02 / 3)
    methods = np.array([0.05, -0.05])  # std: sqrt(0.005)
    matrix = 0.8 + splits[None] + methods[:, None]
    split_std, method_std, residual_std = spread.decompose(matrix)
    assert split_std == pytest.approx(np.sqrt(0.02 / 3))
    assert method_std == pytest.approx(np.sqrt(0.005))
    assert residual_std == pytest.approx(0, abs=1e-12)


def test_the_residual_is_the_interaction_with_its_degrees_of_freedom():
    # 2 x 2, interaction +-e: every cell's residual is +-e, SS = 4 e^2 over 1 dof
    e = 0.03
    matrix = np.array([[0.7 + e, 0.9 - e], [0.7 - e, 0.9 + e]])
    split_std, method_std, residual_std = spread.decompose(matrix)
    assert split_std == pytest.approx(np.std([-0.1, 0.1], ddof=1))
    assert method_std == pytest.approx(0)
    assert residual_std == pytest.approx(2 * e)


def test_rows_are_named_by_method_or_by_the_name_given_and_diverged_runs_left_out(tmp_path):
    header = "dataset,protocol,gamma,seed,method,auroc,val_auroc,seconds\n"
    plain = tmp_path / "plain.csv"
    plain.write_text(header + "nanofibre,honest,0.2,0,devnet,0.8,0.7,1\n"
                     "nanofibre,paper,0.2,0,devnet,0.9,0.7,1\n"
                     "nanofibre,honest,0.1,0,devnet,0.6,0.7,1\n"
                     "nanofibre,honest,0.2,1,devnet,nan,nan,1\n")
    variant = tmp_path / "variant.csv"
    variant.write_text(header + "nanofibre,honest,0.2,0,devnet,0.85,0.7,1\n")
    table = spread.read_named([str(plain), f"devnet-ens5={variant}"], "nanofibre", "honest", 0.2)
    assert table == {"devnet": {0: 0.8}, "devnet-ens5": {0: 0.85}}
