"""``co2scan preview SCRIPT -o plan.png``: a picture of a treatment script's plan."""

from __future__ import annotations

import argparse

from controller.commands import add_command
from controller.commands.plan import (
    DEFAULTS_CAVEAT,
    EXIT_OK,
    add_device,
    add_quiet,
    check,
    fail,
    prepare,
    wrap,
)
from controller.pictures import PictureError, check_png_path, draw_plan

EXIT_NO_PICTURE = 1

HELP = """draw the plan of a treatment script to a PNG a clinician can read

One panel per pass, all at the same scale with a mm scale bar; every spot at its true
diameter, coloured by firing order; earlier passes in grey. Below each pass its injury map:
the thermal model's predicted peak temperature rise (one colour scale for the picture) with
the contour of the damaged reservoir. The settings of each pass in the caption, the verdict
of the clinical envelope and the thermal screen in the title. Needs matplotlib (the 'plot'
extra). -o must name a file ending in .png (PNG is the only format written). Exit status:
0 written, 1 not written (matplotlib missing, or the file cannot be written), 2 bad
arguments (e.g. -o not a .png file name), 3 script invalid (reason on stderr), 6 device
unreachable or unusable (--device); a rejected plan is still drawn, marked REJECTED, and
exits 3. --device URL plans for that device's limits as co2scan plan --device does (the
device is only identified; nothing is fired); without it, the default galvo field and timing.

examples:
  co2scan preview examples/surface_texture.toml -o surface_texture.png
"""


def png_output(text: str) -> str:
    """An argparse type for -o: a file name ending in .png, else an error naming the value
    and what is allowed (argparse prefixes the option and exits 2; nothing is written)."""
    try:
        check_png_path(text)
    except PictureError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def run(args: argparse.Namespace) -> int:
    """Draw the script's plan (REJECTED in the title if the checks refuse it); the exit status
    as HELP lists it."""
    prepared = prepare(args)
    if isinstance(prepared, int):
        return prepared
    script, plans, device = prepared
    warnings, violations, thermal = check(plans, script.pass_wait_s, args.quiet, device)
    verdict = ("REJECTED (see co2scan plan)" if violations else
               f"accepted, {len(warnings)} borderline" if warnings else "accepted")
    who = "".join(f", {k.replace('_', ' ')} {v}" for k, v in
                  (("operator", script.operator), ("patient_ref", script.patient_ref)) if v)
    target = f" for device {device.serial}" if device else ""
    title = (f"{script.path.name}: handpiece {script.handpiece.name}{who} - plan{target} "
             f"{verdict}")
    try:
        picture = draw_plan(plans, [c.outcome for c in thermal], args.out, title)
    except PictureError as exc:
        return fail(str(exc), EXIT_NO_PICTURE)
    width, height = picture.size_px
    print(f"wrote {picture.path} ({width}x{height} px, one panel and injury map per pass)")
    if device is None:
        field_mm = min(plan.timing.field_um for plan in plans) / 2000.0
        rate_hz = max(plan.timing.max_spot_rate_hz for plan in plans)
        print(wrap(DEFAULTS_CAVEAT.format(field_mm=field_mm, rate_hz=rate_hz)))
    return fail("plan rejected:\n  " + "\n  ".join(violations)) if violations else EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``co2scan preview`` command to the CLI's subcommands."""
    parser = add_command(subparsers, "preview", "draw the plan of a treatment script (PNG)", HELP)
    parser.add_argument("script", metavar="SCRIPT", help="treatment script (TOML)")
    parser.add_argument("-o", "--out", required=True, metavar="PNG", type=png_output,
                        help="picture to write (a file name ending in .png)")
    add_device(parser)
    add_quiet(parser)
    parser.set_defaults(handler=run)
