"""Help texts: every train flag documented with its default (operators from the registry); no help text or
docstring cites a document that is not in the repository."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from wrcup.cli.main import build_parser

SRC = Path(__file__).resolve().parents[2] / "src" / "wrcup"
REPO = SRC.parents[1]


def _subparsers(parser: argparse.ArgumentParser):
    """(name, parser) for every (nested) sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, deeper in _subparsers(sub):
                    yield f"{name} {inner}", deeper


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_train_help_documents_every_flag_with_its_default():
    from wrcup.nn import list_operators

    train = dict(_subparsers(build_parser()))["train"]
    text = _flat(train.format_help())
    for action in train._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"train {action.option_strings or action.dest} has no help text"
        default = getattr(action.default, "value", action.default)  # train wraps its defaults (see cli/main.py)
        if not action.required and default is not None and default is not False:
            assert f"(default: {default})" in text, f"train {action.option_strings} does not state its default"
        for choice in action.choices or ():
            assert choice in text
    for operator in list_operators():
        assert operator in text
    assert "(default: wrc-reference)" in text and "(default: cosine)" in text


def test_no_help_text_cites_a_document_outside_the_repository():
    for name, sub in _subparsers(build_parser()):
        text = sub.format_help()
        assert "§" not in text and "spec" not in text.split(), f"wrcup {name} --help cites the spec"
        for doc in re.findall(r"docs/[\w.-]+\.md", text):
            assert (REPO / doc).is_file(), f"wrcup {name} --help cites {doc}, which is not in the repository"


def test_source_cites_only_documents_in_the_repository():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "spec §" not in text, f"{path.relative_to(REPO)} cites 'spec §'"
        for doc in re.findall(r"docs/[\w./-]+\.md", text):
            assert (REPO / doc).is_file(), f"{path.relative_to(REPO)} cites {doc}, which is not in the repository"
