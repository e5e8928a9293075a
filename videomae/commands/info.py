"""`videomae info`: versions, devices, and which backends can run here (and why not)."""

from __future__ import annotations

from videomae.commands import _common as c

NAME = "info"
HELP = "versions, devices, and which backends can run here (and why not)"
DESCRIPTION = "Print versions, devices and every backend's availability with reasons."


def add_arguments(p) -> None:
    c.flag(p, "--json", action="store_true", help="print the report as JSON")


def check(args) -> None:
    pass


def run(args) -> int:
    from videomae.info import main

    return main(as_json=args.json)
