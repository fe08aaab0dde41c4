"""
vorchd-admin's text: the daemon's answers to the admin commands as people read them.

Pure functions from answers to text; L{vorchd.admincmds} names which command prints
with which.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from vorchd.model import RESOURCES


def amount(value: float) -> str:
    """
    An amount as a person writes it: C{2048}, C{2.5}, C{-1} (no trailing C{.0}).
    """
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0")


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()
) -> list[str]:
    """
    C{rows} under C{headers} in aligned columns (those numbered in C{right} aligned
    right), as a list of lines with no trailing spaces.
    """
    rows = [list(map(str, row)) for row in rows]
    right = set(right)
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


STATUS_HEADERS = (
    "PM",
    "STATE",
    "CPU free/cap",
    "RAM MiB free/cap",
    "DISK GiB free/cap",
    "VMS",
    "MISSING",
    "URI",
)


def status_row(pm: Mapping) -> list[str]:
    """
    One PM of a status answer as the cells of a L{STATUS_HEADERS} row.
    """
    room = [f"{amount(pm['free'][r])}/{amount(pm['capacity'][r])}" for r in RESOURCES]
    missing = ",".join(str(vmid) for vmid in pm["missing"]) or "-"
    return [str(pm["pmid"]), pm["state"], *room, str(pm["vms"]), missing, pm["uri"]]


def format_ratios(ratios: Mapping[str, float]) -> str:
    """
    Overcommit ratios as they are set: C{cpu=2.0 ram=1.0 disk=1.0}.
    """
    return " ".join(f"{r}={float(ratios[r])!r}" for r in RESOURCES if r in ratios)


def format_status(status: Mapping) -> str:
    """
    A status answer as text: a table of the PMs, then the fleet, policy and ratios.
    """
    pms = status["pms"]
    if pms:
        lines = table(STATUS_HEADERS, map(status_row, pms), right=(0, 2, 3, 4, 5))
    else:
        lines = ["no PMs"]
    return "\n".join(
        [
            *lines,
            "",
            f"fleet:  {status['fleet']}",
            f"policy: {status['policy']}",
            f"ratios: {format_ratios(status['ratios'])}",
        ]
    )


def format_policies(names: Iterable[str], current: str | None, aliases: Mapping[str, str]) -> str:
    """
    Policy names one a line, the one in force marked C{*}, each noted with its alias
    (C{aliases} maps an alias to the name it stands for).
    """
    alias_of = {name: alias for alias, name in aliases.items()}
    lines = []
    for name in names:
        mark = "*" if name == current else " "
        alias = f"  (alias: {alias_of[name]})" if name in alias_of else ""
        lines.append(f"{mark} {name}{alias}")
    return "\n".join(lines)


def format_rediscovery(found: Mapping[int, Mapping | None]) -> str:
    """
    What each PM reported when rediscovered, one a line, or that it is unreachable.
    """
    lines = []
    for pmid in sorted(found):
        capacity = found[pmid]
        if capacity is None:
            lines.append(f"PM {pmid}: unreachable")
        else:
            lines.append(
                f"PM {pmid}: cpu {amount(capacity['cpu'])}, ram {amount(capacity['ram'])} MiB,"
                f" disk {amount(capacity['disk'])} GiB"
            )
    return "\n".join(lines)


def format_pruned(pruned: Mapping[int, list[str] | None]) -> str:
    """
    The base copies deleted on each PM, or that it could not be reached.
    """
    lines = []
    for pmid in sorted(pruned):
        names = pruned[pmid]
        if names is None:
            lines.append(f"PM {pmid}: unreachable, nothing pruned")
        else:
            lines.append(f"PM {pmid}: " + (", ".join(names) if names else "nothing to prune"))
    return "\n".join(lines)


def format_drained(answer: int | Mapping) -> str:
    """
    C{drain}'s answer: the PM's id, or with --evacuate what moved where and what did not.
    """
    if not isinstance(answer, Mapping):
        return f"PM {answer} drained: it gets no new VMs and keeps its own"
    moved, failed = answer.get("moved") or {}, answer.get("failed") or {}
    lines = [f"PM {answer['pmid']} drained: {len(moved)} VMs moved, {len(failed)} not"]
    lines += [f"  vm {vmid} could not move: {failed[vmid]}" for vmid in sorted(failed)]
    if failed:
        lines.append("  (run the same command again to retry them)")
    return "\n".join(lines)


def format_moved(report: Mapping) -> str:
    """
    One VM of an evacuation: moved (to which PM) or not (why).
    """
    if report.get("pmid"):
        return f"vm {report['vmid']}: moved to PM {report['pmid']}"
    return f"vm {report['vmid']}: not moved: {report.get('reason', '')}"


def run_whatif(answer: Mapping, values: Mapping[str, object]) -> str:
    """
    C{whatif}: the simulation (L{vorchd.sim.whatif}) of the daemon's fleet as it is now
    (C{answer}: its C{/v1/fleet} document and C{[allocation]} options), run here with the
    command's words; the comparison to print.
    """
    import io

    from vorchd.cli.admin_connect import AdminCLIError
    from vorchd.inventory import InputFileError
    from vorchd.sim import whatif

    out = io.StringIO()
    try:
        whatif.whatif(answer["fleet"], list(values.get("argv") or ()), answer["options"], out)
    except SystemExit as e:
        # Its own --help (printed already), or its usage error (printed on stderr).
        if not e.code:
            return ""
        raise AdminCLIError("whatif: wrong usage (see vorchd-admin whatif --help)") from None
    except (whatif.SimError, InputFileError) as e:
        raise AdminCLIError(f"whatif: {e}") from None
    return out.getvalue().rstrip("\n")
