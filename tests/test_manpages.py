from pathlib import Path

from oneclass.cli.manpage import pages

MAN = Path(__file__).resolve().parents[1] / "man"


def test_man_pages_match_the_cli():
    expected = pages()
    on_disk = {p.name: p.read_text() for p in MAN.glob("*.1")}
    assert sorted(on_disk) == sorted(expected), "regenerate: python -m oneclass.cli.manpage man/"
    for name, text in expected.items():
        assert on_disk[name] == text, f"man/{name} is stale: python -m oneclass.cli.manpage man/"


def test_every_subcommand_has_a_page():
    assert {"oneclass.1", "oneclass-extract-patches.1", "oneclass-list-datasets.1"} <= set(pages())
