"""The quark/gluon example's quoting of results.md into the READMEs (quote.py), without training:
a stale row is named with its README, table and row; only the named run's blocks change; broken
markers are errors naming the file and line."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.test_qg_example import example_module

RESULTS = """# What train.py measured

<!-- robustcheck:table summary -->
| tagger | AUC |
|---|---|
| dnn | 0.8595 |
| pfn | 0.8538 |
<!-- /robustcheck:table summary -->

<!-- robustcheck:table settings -->
python train.py --seed 1
<!-- /robustcheck:table settings -->
"""

README = """# Example

Text before.

<!-- robustcheck:table summary from test-scale -->
| tagger | AUC |
|---|---|
| dnn | 0.8875 |
| pfn | 0.8538 |
<!-- /robustcheck:table summary from test-scale -->

<!-- robustcheck:table summary from full-statistics -->
| tagger | AUC |
|---|---|
| dnn | 0.8667 |
<!-- /robustcheck:table summary from full-statistics -->

Text after, `<!-- robustcheck:table summary -->` inline is not a marker.
"""


@pytest.fixture(scope="module")
def quote() -> ModuleType:
    return example_module("quote")


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "results.md").write_text(RESULTS)
    (tmp_path / "README.md").write_text(README)
    return tmp_path / "results.md", tmp_path / "README.md"


def test_a_stale_row_is_named_with_readme_table_and_row(
    quote: ModuleType, files: tuple[Path, Path]
) -> None:
    results, readme = files
    tables = quote.tables_of(results)
    assert tables["summary"][2] == "| dnn | 0.8595 |"
    (message,) = quote.stale_blocks(readme, "test-scale", tables)
    assert f"{readme}: table 'summary' from test-scale, row 3 (line 8)" in message
    assert "README: | dnn | 0.8875 |" in message and "code:   | dnn | 0.8595 |" in message
    # each run's blocks are compared with that run's tables only
    (other,) = quote.stale_blocks(readme, "full-statistics", {"summary": ["| x |"]})
    assert "table 'summary' from full-statistics, row 1 (line 13)" in other


def test_quoting_rewrites_only_the_named_run_and_then_nothing_is_stale(
    quote: ModuleType, files: tuple[Path, Path]
) -> None:
    results, readme = files
    tables = quote.tables_of(results)
    text = quote.quote(README, readme, "test-scale", tables)
    assert "| dnn | 0.8595 |" in text and "| dnn | 0.8875 |" not in text
    assert "| dnn | 0.8667 |" in text  # the full-statistics block is untouched
    assert text.startswith("# Example\n\nText before.") and text.endswith("not a marker.\n")
    assert quote.quote(text, readme, "test-scale", tables) == text
    readme.write_text(text)
    assert quote.stale_blocks(readme, "test-scale", tables) == []


def test_missing_and_extra_rows_and_tables_are_stale(
    quote: ModuleType, files: tuple[Path, Path]
) -> None:
    results, readme = files
    tables = quote.tables_of(results)
    longer = {"summary": [*tables["summary"][:2], "| dnn | 0.8875 |", "| pfn | 0.8538 |", "| x |"]}
    (message,) = quote.stale_blocks(readme, "test-scale", longer)
    assert "row 5: only the code has it" in message and "| x |" in message
    (message,) = quote.stale_blocks(readme, "test-scale", {})
    assert "results.md has no such table" in message
    with pytest.raises(ValueError, match="results.md has no table 'summary'"):
        quote.quote(README, readme, "test-scale", {})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<!-- robustcheck:table a -->\n| x |\n", r"README.md:1: table marker never closed"),
        (
            "<!-- robustcheck:table a from r -->\n<!-- /robustcheck:table b from r -->\n",
            r"README.md:2: end marker .* does not close the table opened at line 1",
        ),
        (
            "<!-- robustcheck:table a -->\n<!-- robustcheck:table b -->\n",
            r"README.md:2: a table starts inside the table opened at line 1",
        ),
        ("<!-- robustcheck:table a of r -->\n", r"README.md:1: malformed marker"),
    ],
)
def test_broken_markers_name_the_file_and_line(quote: ModuleType, text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        quote.blocks(text, "README.md")


def test_train_refuses_an_unknown_tagger_to_check(capsys: pytest.CaptureFixture[str]) -> None:
    train = example_module("train")
    assert train.checked_taggers(["pfn", "dnn"]) == ("dnn", "pfn")
    assert train.checked_taggers(True) == train.TAGGERS and train.checked_taggers(False) == ()
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--check-taggers", "dnn,bdt", "--samples", "nowhere"])
    assert exit_info.value.code == 2
    assert "--check-taggers: unknown tagger(s) bdt: choose from dnn" in capsys.readouterr().err


def test_quote_script_refuses_an_external_run_without_results(quote: ModuleType) -> None:
    with pytest.raises(SystemExit):
        quote.main(["--run", "full-statistics"])


def test_a_tagger_stopped_by_a_sanity_gate_gets_a_row_saying_so() -> None:
    train = example_module("train")
    results = {"sanity_failures": {"pfn": "model: accuracy: every jet class 0"}}
    for table in (train.summary_table(results), train.overview_table(results)):
        assert table[-1] == "| pfn | sanity gate failed: model: accuracy: every jet class 0 |"
        assert len(table) == 3  # header, rule, the row
