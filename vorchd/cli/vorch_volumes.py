"""
vorch's block volume commands (C{vorch volume create|show|list|attach|detach|destroy}):
their parsers and what each asks the daemon.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from vorchd.cli.vorch_client import Client, failure
from vorchd.cli.vorch_format import Progress, format_table

#: The volume commands and their options, for the command tree (completion).
COMMANDS: dict[str, tuple[str, ...]] = {
    "create": ("--size",),
    "show": (),
    "list": (),
    "attach": (),
    "detach": (),
    "destroy": (),
}

HEADERS = ("VOLUMEID", "NAME", "SIZE GiB", "STATUS", "VM")


def format_volumes(volumes: Iterable[Mapping[str, Any]]) -> str:
    """
    C{volume/query} answers as a table (VM empty when not attached).
    """
    rows = [(v["volumeid"], v["name"], v["size"], v["status"], v.get("vmid", "")) for v in volumes]
    return format_table(HEADERS, rows)


def query_volume(client: Client, volumeid: int) -> dict:
    answer, reason = client.get("volume/query", volumeid=volumeid)
    if not isinstance(answer, dict) or "volumeid" not in answer:
        why = reason or (answer.get("error") if isinstance(answer, dict) else None)
        raise failure(f"cannot show volume {volumeid}", why, answer)
    return answer


def _done(client: Client, path: str, what: str, **params: Any) -> dict:
    with Progress(f"{what}..."):
        answer, reason = client.get(path, **params)
    if not isinstance(answer, dict) or answer.get("status") != 1:
        raise failure(f"cannot {what}", reason, answer)
    return answer


def volume_create(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    answer, reason = client.get("volume/create", name=options.name, size=options.size)
    if not isinstance(answer, dict) or not answer.get("volumeid"):
        raise failure(f"cannot create volume {options.name!r}", reason, answer)
    if options.json:
        return answer, ""
    return answer, format_volumes([query_volume(client, answer["volumeid"])])


def volume_show(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    volume = query_volume(client, options.volumeid)
    return volume, format_volumes([volume])


def volume_list(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    answer, reason = client.get("volume/list")
    if not isinstance(answer, dict) or not isinstance(answer.get("volumes"), list):
        raise failure("cannot list the volumes", reason, answer)
    return answer["volumes"], format_volumes(answer["volumes"])


def volume_attach(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    volumeid, vmid = options.volumeid, options.vmid
    what = f"attach volume {volumeid} to vm {vmid}"
    answer = _done(client, "volume/attach", what, vmid=vmid, volumeid=volumeid)
    return answer, f"attached volume {volumeid} to vm {vmid}\n"


def volume_detach(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    what = f"detach volume {options.volumeid}"
    answer = _done(client, "volume/detach", what, volumeid=options.volumeid)
    return answer, f"detached volume {options.volumeid}\n"


def volume_destroy(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    what = f"destroy volume {options.volumeid}"
    answer = _done(client, "volume/destroy", what, volumeid=options.volumeid)
    return answer, f"destroyed volume {options.volumeid}\n"


def add_parser(groups, common: list, id_arg: Callable[[str], int]) -> None:
    """
    Add the C{volume} group to vorch's command line (C{groups}, its subparsers).
    """
    volume = groups.add_parser(
        "volume", help="create, attach, detach, destroy and list block volumes"
    ).add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    create = volume.add_parser("create", parents=common, help="create a volume (prints it)")
    create.add_argument("name", metavar="NAME", help="any text; names need not be unique")
    create.add_argument("--size", type=id_arg, required=True, metavar="GIB", help="in GiB")
    create.set_defaults(run=volume_create)
    for name, does, run in (
        ("show", "one volume", volume_show),
        ("detach", "detach a volume from its VM (it stays)", volume_detach),
        ("destroy", "delete a volume that is not attached", volume_destroy),
    ):
        command = volume.add_parser(name, parents=common, help=does)
        command.add_argument("volumeid", type=id_arg, metavar="VOLUMEID")
        command.set_defaults(run=run)
    attach = volume.add_parser(
        "attach", parents=common, help="attach a volume to a VM (the guest sees a new disk)"
    )
    attach.add_argument("volumeid", type=id_arg, metavar="VOLUMEID")
    attach.add_argument("vmid", type=id_arg, metavar="VMID")
    attach.set_defaults(run=volume_attach)
    volume.add_parser("list", parents=common, help="every volume").set_defaults(run=volume_list)
