"""The man pages and ``--help`` come from one source (oneclass/cli/manpage.py and the typer
commands) and must say the same things."""

import re
import shlex
from pathlib import Path

import pytest
import typer

from conftest import oneclass
from oneclass.cli.manpage import EXAMPLES, pages

ROOT = Path(__file__).resolve().parents[1]
MAN = ROOT / "man"
PAGES = pages()


def _tree() -> dict[str, list[str]]:
    """Page name -> the command's words after "oneclass", for every command of the CLI."""
    from oneclass.cli.main import app

    out = {}

    def walk(words, command):
        out["-".join(["oneclass", *words]) + ".1"] = words
        for sub_name, sub in getattr(command, "commands", {}).items():
            walk([*words, sub_name], sub)

    walk([], typer.main.get_command(app))
    return out


COMMANDS = _tree()
ORDER = ["NAME", "SYNOPSIS", "DESCRIPTION", "ARGUMENTS", "OPTIONS", "COMMANDS", "EXAMPLES",
         "EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"]
ALWAYS = {"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXAMPLES", "EXIT STATUS"}
ENVIRONMENT = {"oneclass.1", "oneclass-extract-patches.1", "oneclass-train.1", "oneclass-score.1",
               "oneclass-tsne.1"}
FILES = {"oneclass.1", "oneclass-extract-patches.1", "oneclass-train.1", "oneclass-score.1",
         "oneclass-evaluate.1", "oneclass-tsne.1"}


def plain(roff: str) -> str:
    """roff text as a reader sees it: escapes and font changes undone."""
    text = roff.replace("\\\\", "\0").replace("\\-", "-").replace("\\&", "")
    text = re.sub(r"\\f[BIRP]", "", text)
    return text.replace("\0", "\\")


def sections(roff: str) -> dict[str, str]:
    found = re.split(r"^\.SH (.+)$", roff, flags=re.M)
    return {title.strip('"'): body for title, body in zip(found[1::2], found[2::2])}


def examples(roff: str) -> list[str]:
    """The command lines of the EXAMPLES section (the .nf blocks)."""
    body = sections(roff).get("EXAMPLES", "")
    return [plain(line) for block in re.findall(r"^\.nf\n(.*?)^\.fi$", body, flags=re.M | re.S)
            for line in block.splitlines()]


def tags(roff: str, section: str) -> list[str]:
    """The terms of a section's .TP entries, as a reader sees them."""
    return [plain(term) for term in re.findall(r"^\.TP\n(.+)$", sections(roff).get(section, ""), flags=re.M)]


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    """``oneclass ... --help`` of every page's command, run as a user does."""
    out = {}
    for name, words in COMMANDS.items():
        result = oneclass(*words, "--help")
        assert result.returncode == 0, result.stderr
        out[name] = result.stdout
    return out


def test_man_pages_match_the_cli():
    on_disk = {p.name: p.read_text() for p in MAN.glob("*.1")}
    assert sorted(on_disk) == sorted(PAGES), "regenerate: python -m oneclass.cli.manpage man/"
    for name, text in PAGES.items():
        assert on_disk[name] == text, f"man/{name} is stale: python -m oneclass.cli.manpage man/"


def test_every_command_has_a_page():
    assert set(COMMANDS) == set(PAGES)
    assert {"oneclass.1", "oneclass-extract-patches.1", "oneclass-train.1",
            "oneclass-list-datasets.1"} <= set(PAGES)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_page_has_its_sections_in_order(name):
    found = list(sections(PAGES[name]))
    wanted = ALWAYS | ({"ENVIRONMENT"} if name in ENVIRONMENT else set()) | ({"FILES"} if name in FILES else set())
    assert wanted <= set(found), f"{name}: missing {sorted(wanted - set(found))}"
    assert set(found) <= set(ORDER) and found == sorted(found, key=ORDER.index), found
    for title in found:
        assert sections(PAGES[name])[title].strip(), f"{name}: empty {title}"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_exit_codes_are_listed(name):
    assert tags(PAGES[name], "EXIT STATUS") == ["0", "1", "2", "130", *(["10+N"] if name == "oneclass-sweep.1" else [])]
    if name in ("oneclass.1", "oneclass-train.1"):
        assert "--resume" in plain(sections(PAGES[name])["EXIT STATUS"])


def test_flags_render_as_flags():
    for name, text in PAGES.items():
        assert "<bool>" not in text, name
    extract = tags(PAGES["oneclass-extract-patches.1"], "OPTIONS")
    train = tags(PAGES["oneclass-train.1"], "OPTIONS")
    assert {"--whole-image / --patches", "--overwrite", "-q, --quiet", "-h, --help"} <= set(extract)
    assert {"--resume", "--overwrite", "-q, --quiet"} <= set(train)
    assert "--version" in tags(PAGES["oneclass.1"], "OPTIONS")


def test_help_shows_flags_as_flags_too(helps):
    for name, text in helps.items():
        assert "<bool>" not in text, name
    assert re.search(r"^  --whole-image / --patches  ", helps["oneclass-extract-patches.1"], flags=re.M)


def test_every_man_example_is_in_help(helps):
    for name, text in PAGES.items():
        shown = examples(text)
        assert 2 <= len(shown) <= 5, f"{name}: {len(shown)} examples"
        lines = {line.strip() for line in helps[name].splitlines()}
        for example in shown:
            assert example in lines, f"{name}: `{example}` is not in `oneclass {' '.join(COMMANDS[name])} --help`"


def test_every_help_section_is_in_the_man_page(helps):
    """The reference below --help's options (Examples:, Exit status:, ...) is the man page's."""
    for name, text in helps.items():
        epilog = text[text.index("\n  Examples:\n"):]
        shown = {title.upper(): block for title, block in
                 re.findall(r"^  (Examples|Exit status|Environment|Files):\n(.*?)(?=\n\n|\Z)", epilog,
                            flags=re.M | re.S)}
        assert set(shown) == {t for t in sections(PAGES[name]) if t in ("EXAMPLES", "EXIT STATUS",
                                                                         "ENVIRONMENT", "FILES")}, name
        assert "130" in shown["EXIT STATUS"], name
        for title, block in shown.items():
            terms = [line.strip() for line in block.splitlines() if re.match(r"^    \S", line)]
            if title == "EXIT STATUS":
                terms = [term.split()[0] for term in terms]
            in_man = examples(PAGES[name]) if title == "EXAMPLES" else tags(PAGES[name], title)
            assert terms == in_man, (name, title)


def test_every_help_option_is_in_the_man_page(helps):
    for name, text in helps.items():
        man_terms = set(tags(PAGES[name], "OPTIONS")) | set(tags(PAGES[name], "ARGUMENTS"))
        listed = []
        for title in ("Arguments", "Options"):
            block = re.search(rf"^{title}:\n(.*?)(?:\n\n|\Z)", text, flags=re.M | re.S)
            if block:
                listed += [re.split(r"\s{2,}", line.strip())[0]
                           for line in block.group(1).splitlines() if re.match(r"^  \S", line)]
        assert listed, name
        for term in listed:
            assert term in man_terms, f"{name}: `{term}` of --help is not in the man page"
        for flag in set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", " ".join(listed))):
            assert flag in plain(PAGES[name]), (name, flag)


def _invocations(example: str) -> list[list[str]]:
    """The oneclass commands of an example line: pipes, $( ) and redirections taken apart."""
    calls = []
    for part in re.split(r"\||\$\(|\)", example):
        words = shlex.split(part)
        if ">" in words:
            words = words[: words.index(">")]
        if "oneclass" in words:
            calls.append(words[words.index("oneclass") + 1:])
    return calls


def test_examples_are_real_commands():
    """Short lines, shipped recipes, and flags the CLI accepts (parsed, not run)."""
    from oneclass.cli.main import app

    root = typer.main.get_command(app)
    for path, entries in EXAMPLES.items():
        assert 2 <= len(entries) <= 5, path
        for example, what in entries:
            assert len(example) <= 74 and "\n" not in example and example.isascii(), example
            assert what.strip() and what.isascii(), example
            for recipe in re.findall(r"recipes/[\w-]+\.yaml", example):
                assert (ROOT / recipe).is_file(), example
            calls = _invocations(example)
            assert calls, example
            assert any(" ".join(["oneclass", *call]).startswith(path) for call in calls), (path, example)
            for args in calls:
                command, words = root, ["oneclass"]
                while hasattr(command, "commands"):
                    words.append(args[0])
                    command, args = command.commands[args[0]], args[1:]
                command.make_context(" ".join(words), list(args))  # raises on unknown flags
