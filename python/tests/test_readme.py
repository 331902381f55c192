"""README's Python example, run as a doctest from the repository root, so that the
example a newcomer copies works as printed (and needs nothing but ecr_sniff)."""

from __future__ import annotations

import doctest
import os
import re
from pathlib import Path

import pytest


def readme_example(root: Path) -> str:
    text = (root / "README.md").read_text(encoding="utf-8")
    section = text.split("### Python: `import ecr_sniff`", 1)[1]
    m = re.search(r"```pycon\n(.*?)```", section, re.S)
    assert m, "README's Python section has no pycon example"
    return m.group(1)


def test_readme_python_example_runs_as_printed(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = readme_example(root)
    assert "pandas" not in example.split("```")[0], "the example must not need pandas"
    monkeypatch.chdir(root)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(example, {}, "README.md", "README.md", 0)
    assert len(test.examples) >= 5
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} README examples failed"
    assert os.getcwd() == str(root)
