"""The README's service-script example (the device API) runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_service_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("#### Service scripts: the device API", 1)[1].split("\n#### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the service section lost its example"
    exec(compile(blocks[0], "README.md", "exec"), {})  # our own documentation
    out = capsys.readouterr().out
    assert "STANDBY KEY_ON|DOOR_CLOSED|ESTOP_RELEASED" in out
    assert "fired 20 of 20" in out
    assert "INTERLOCK_OPEN (detail 13: door open)" in out


def test_readme_service_section_follows_the_scripting_example() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.index("### Scripting API") < text.index("#### Service scripts") < text.index(
        "#### Errors")
