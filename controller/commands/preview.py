"""``co2scan preview SCRIPT -o plan.png``: a picture of a treatment script's plan."""

from __future__ import annotations

import argparse

from controller.commands import add_command
from controller.commands.plan import EXIT_OK, check, fail, load_and_plan
from controller.errors import SettingsError
from controller.pictures import PlottingUnavailable, draw_plan

EXIT_NO_PLOTTING = 1

HELP = """draw the plan of a treatment script to a PNG a clinician can read

One panel per pass, all at the same scale with a mm scale bar; every spot at its true
diameter, coloured by firing order; earlier passes in grey; the settings of each pass in
the caption and the clinical envelope's verdict in the title. Needs matplotlib (the 'plot'
extra). Exit status: 0 written, 1 matplotlib missing, 3 script invalid (reason on stderr);
a plan the envelope rejects is still drawn, marked REJECTED, and exits 3.

examples:
  co2scan preview examples/surface_texture.toml -o surface_texture.png
"""


def run(args: argparse.Namespace) -> int:
    try:
        script, plans = load_and_plan(args.script)
    except SettingsError as exc:
        return fail(str(exc))
    warnings, violations = check(plans)
    verdict = ("REJECTED by the clinical envelope (see co2scan plan)" if violations else
               f"accepted, {len(warnings)} borderline" if warnings else "accepted")
    who = "".join(f", {k.replace('_', ' ')} {v}" for k, v in
                  (("operator", script.operator), ("patient_ref", script.patient_ref)) if v)
    title = f"{script.path.name}: handpiece {script.handpiece.name}{who} - plan {verdict}"
    try:
        picture = draw_plan(plans, args.out, title)
    except PlottingUnavailable as exc:
        return fail(str(exc), EXIT_NO_PLOTTING)
    width, height = picture.size_px
    print(f"wrote {picture.path} ({width}x{height} px, one panel per pass)")
    return fail("plan rejected:\n  " + "\n  ".join(violations)) if violations else EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "preview", "draw the plan of a treatment script (PNG)", HELP)
    parser.add_argument("script", metavar="SCRIPT", help="treatment script (TOML)")
    parser.add_argument("-o", "--out", required=True, metavar="PNG", help="picture to write")
    parser.set_defaults(handler=run)
