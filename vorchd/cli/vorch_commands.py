"""
vorch's commands: each one asks the daemon and answers the JSON to print with
C{--json} and the text to print otherwise.
"""

from __future__ import annotations

import argparse
from typing import Any

from vorchd.cli.vorch_client import (
    Client,
    failure,
    list_pm_vms,
    list_pmids,
    query_pm,
    query_vm,
)
from vorchd.cli.vorch_format import (
    Progress,
    format_images,
    format_pms,
    format_types,
    format_vmids,
    format_vms,
)


def vm_create(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    params = {"name": options.name, "instance_type": options.type, "image_id": options.image}
    with Progress(f"creating vm {options.name!r}..."):
        answer, reason = client.get("vm/create", **params)
    if not isinstance(answer, dict) or not answer.get("vmid"):
        raise failure(f"cannot create vm {options.name!r}", reason, answer)
    if options.json:
        return answer, ""
    return answer, format_vms([query_vm(client, answer["vmid"])])


def vm_show(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    vm = query_vm(client, options.vmid)
    return vm, format_vms([vm])


def vm_destroy(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    answer, reason = client.get("vm/destroy", vmid=options.vmid)
    if not isinstance(answer, dict) or answer.get("status") != 1:
        raise failure(f"cannot destroy vm {options.vmid}", reason, answer)
    return answer, f"destroyed vm {options.vmid}\n"


def vm_list(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    pmids = [options.pm] if options.pm is not None else list_pmids(client)
    vms = []
    for pmid in pmids:
        for vmid in list_pm_vms(client, pmid):
            answer, _ = client.get("vm/query", vmid=vmid)
            # A VM destroyed between the two calls is simply no longer listed.
            if isinstance(answer, dict):
                vms.append(answer)
    vms.sort(key=lambda vm: vm["vmid"])
    return vms, format_vms(vms)


def types(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    answer, reason = client.get("vm/types")
    if not isinstance(answer, dict) or "types" not in answer:
        raise failure("cannot list the types", reason, answer)
    return answer, format_types(answer)


def images(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    answer, reason = client.get("image/list")
    if not isinstance(answer, dict) or "images" not in answer:
        raise failure("cannot list the images", reason, answer)
    return answer, format_images(answer)


def pm_list(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    pms = [query_pm(client, pmid) for pmid in list_pmids(client)]
    return pms, format_pms(pms)


def pm_show(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    pm = query_pm(client, options.pmid)
    return pm, format_pms([pm])


def pm_vms(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    answer, reason = client.get("pm/listvms", pmid=options.pmid)
    if not isinstance(answer, dict) or not isinstance(answer.get("vmids"), list):
        raise failure(f"cannot list the vms of pm {options.pmid}", reason, answer)
    return answer, format_vmids(answer["vmids"])
