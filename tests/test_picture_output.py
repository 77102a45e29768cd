"""``-o`` of ``co2scan preview`` and ``co2scan report``: a file name ending in .png, else one
argparse error naming -o (exit 2) with nothing written anywhere; a path that cannot be written
is one clear error too (audit finding A)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.cli import main
from controller.pictures import Picture, PictureError, draw_report

EXAMPLE = str(Path(__file__).parents[1] / "examples" / "rapid_recovery.toml")
EXIT_BAD_ARGUMENT = 2  # argparse's status for a rejected option
ALLOWED = "allowed: a file name ending in .png"



def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    """The exit status of ``co2scan argv`` (argparse's errors raise SystemExit) and stderr."""
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exc:
        status = int(exc.code or 0)
    return status, capsys.readouterr().err


def error_line(err: str) -> str:
    """The one error line of stderr (argparse puts its usage line before it)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


def listing(*folders: Path) -> dict[Path, set[str]]:
    return {folder: set(os.listdir(folder)) for folder in folders}


def bad_values(tmp_path: Path) -> list[tuple[str, str]]:
    """(value of -o, what the error must say about it)."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    (tmp_path / "dir.png").mkdir()
    return [
        (str(folder), "(a directory)"),
        (str(tmp_path / "dir.png"), "(a directory)"),
        (str(tmp_path / "new.png") + os.sep, "(a directory)"),
        ("", "(empty)"),
        (str(tmp_path / "noext"), repr(str(tmp_path / "noext"))),
        (str(tmp_path / "x.pdf"), repr(str(tmp_path / "x.pdf"))),
        (str(tmp_path / "x.svg"), repr(str(tmp_path / "x.svg"))),
        (str(tmp_path / "x.txt"), repr(str(tmp_path / "x.txt"))),
        (str(tmp_path / ".png"), "(no name before .png)"),
    ]


def assert_rejected(capsys: pytest.CaptureFixture[str], argv: list[str], value: str,
                    says: str, tmp_path: Path, cwd: Path) -> None:
    before = listing(tmp_path, tmp_path.parent, cwd)
    status, err = run_cli(capsys, argv)
    line = error_line(err)
    assert status == EXIT_BAD_ARGUMENT, err
    assert "argument -o/--" in line and says in line and ALLOWED in line, line
    assert listing(tmp_path, tmp_path.parent, cwd) == before, f"-o {value!r} wrote a file"


@pytest.mark.parametrize("case", range(9))
def test_preview_refuses_an_output_that_is_not_a_png_file(
        case: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    value, says = bad_values(tmp_path)[case]
    assert_rejected(capsys, ["preview", EXAMPLE, "-o", value], value, says, tmp_path, cwd)
    assert not Path(value.rstrip(os.sep) + ".png").exists()  # matplotlib's appended suffix


@pytest.mark.parametrize("case", range(9))
def test_report_refuses_an_output_that_is_not_a_png_file(
        case: int, tmp_path: Path, run_record: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    value, says = bad_values(tmp_path)[case]
    assert_rejected(capsys, ["report", "1", "--record", run_record, "-o", value], value, says,
                    tmp_path, cwd)
    assert not Path(value.rstrip(os.sep) + ".png").exists()


def test_the_long_option_and_a_capital_suffix(tmp_path: Path, run_record: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run_cli(capsys, ["preview", EXAMPLE, "--out", str(tmp_path / "x.jpg")])
    assert status == EXIT_BAD_ARGUMENT and "argument -o/--out" in error_line(err)
    status, err = run_cli(capsys, ["report", "1", "--record", run_record, "--output",
                                   str(tmp_path / "x.jpg")])
    assert status == EXIT_BAD_ARGUMENT and "argument -o/--output" in error_line(err)
    out = tmp_path / "PLAN.PNG"
    assert main(["preview", EXAMPLE, "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["PLAN.PNG"]


def test_a_png_path_that_cannot_be_written_is_one_error(
        tmp_path: Path, run_record: str, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for argv, status in ((["preview", EXAMPLE], 1), (["report", "1", "--record", run_record], 3)):
        for out in (tmp_path / "no" / "such" / "p.png", blocker / "p.png"):
            got, err = run_cli(capsys, [*argv, "-o", str(out)])
            line = error_line(err)
            assert got == status and "cannot write" in line and str(out) in line, err
    assert sorted(os.listdir(tmp_path)) == ["a-file"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions and a user they apply to")
def test_a_folder_without_write_permission(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        status, err = run_cli(capsys, ["preview", EXAMPLE, "-o", str(locked / "p.png")])
        assert status == 1 and "cannot write" in error_line(err)
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o700)


def test_the_api_writes_exactly_the_path_given_or_raises(tmp_path: Path) -> None:
    def draw(out: str | Path) -> Picture:
        return draw_report([[0.0, 0.0]], [True], [40_000.0], 40_000, out, "t",
                           injury="no map")

    for out in (tmp_path, str(tmp_path / "x.pdf"), "", tmp_path / "noext"):
        with pytest.raises(PictureError, match=ALLOWED):
            draw(out)
    assert os.listdir(tmp_path) == []
    picture = draw(tmp_path / "r.png")
    assert picture.path == tmp_path / "r.png" and os.listdir(tmp_path) == ["r.png"]
