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
    format_info,
    format_pms,
    format_shown,
    format_types,
    format_vmids,
    format_vms,
)

# The state changes of a running VM (vorch vm stop ...), each the daemon's /vm/<action>:
# what it does, and what it is called as it runs and once done.
ACTIONS = {
    "stop": ("power a VM off (its disk and room stay)", "stopping", "stopped"),
    "start": ("boot a stopped VM", "starting", "started"),
    "reboot": ("restart a running VM", "rebooting", "rebooted"),
    "suspend": ("pause a running VM, in memory", "suspending", "suspended"),
    "resume": ("let a suspended VM run on", "resuming", "resumed"),
}


def _done(client: Client, path: str, what: str, doing: str, **params: Any) -> dict:
    """
    GET C{path}, a call answering {"status": 1} once done (C{doing} shows meanwhile on a
    terminal); that answer.

    @raise VorchError: it answered anything else ("cannot C{what}: the daemon's reason").
    """
    with Progress(f"{doing}..."):
        answer, reason = client.get(path, **params)
    if not isinstance(answer, dict) or answer.get("status") != 1:
        raise failure(f"cannot {what}", reason, answer)
    return answer


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
    return shown(client, options.vmid)


def shown(client: Client, vmid: int) -> tuple[Any, str]:
    """
    VM C{vmid}'s C{vm/query} answer, and as text with its MAC and IP addresses (from
    C{vm/info}, when that answers).
    """
    vm = query_vm(client, vmid)
    info, _ = client.get("vm/info", vmid=vmid)
    return vm, format_shown(vm, info if isinstance(info, dict) else None)


def vm_destroy(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    answer, reason = client.get("vm/destroy", vmid=options.vmid)
    if not isinstance(answer, dict) or answer.get("status") != 1:
        raise failure(f"cannot destroy vm {options.vmid}", reason, answer)
    return answer, f"destroyed vm {options.vmid}\n"


def vm_info(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    answer, reason = client.get("vm/info", vmid=options.vmid)
    if not isinstance(answer, dict) or not answer.get("vmid"):
        raise failure(f"cannot show vm {options.vmid}", reason, answer)
    return answer, format_info([answer])


def vm_act(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    """
    vorch vm stop|start|reboot|suspend|resume VMID.
    """
    action, vmid = options.command, options.vmid
    _, doing, done = ACTIONS[action]
    answer = _done(client, f"vm/{action}", f"{action} vm {vmid}", f"{doing} vm {vmid}", vmid=vmid)
    return answer, f"{done} vm {vmid}\n"


def vm_resize(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    what = f"resize vm {options.vmid} to type {options.type}"
    params = {"vmid": options.vmid, "instance_type": options.type}
    answer = _done(client, "vm/resize", what, f"resizing vm {options.vmid}", **params)
    return answer, f"resized vm {options.vmid} to type {options.type}\n"


def vm_migrate(client: Client, options: argparse.Namespace) -> tuple[Any, str]:
    params: dict[str, Any] = {"vmid": options.vmid}
    what = f"migrate vm {options.vmid}"
    if options.pmid is not None:
        params["pmid"] = options.pmid
        what += f" to pm {options.pmid}"
    answer = _done(client, "vm/migrate", what, f"migrating vm {options.vmid}", **params)
    if options.json:
        return answer, ""
    # Where it went (the policy's choice, without a PMID).
    where, _ = client.get("vm/query", vmid=options.vmid)
    pmid = where.get("pmid") if isinstance(where, dict) else options.pmid
    return answer, f"migrated vm {options.vmid}" + (f" to pm {pmid}" if pmid else "") + "\n"


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
