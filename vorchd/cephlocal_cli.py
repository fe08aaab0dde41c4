"""
The one-node Ceph of L{vorchd.cephlocal} for install.sh (C{./install.sh ceph}), and the
daemon's ini pointed at it:

    python -m vorchd.cephlocal_cli up --dir DIR [--port P] [--pool P] [--user U]
    python -m vorchd.cephlocal_cli down|status --dir DIR
    python -m vorchd.cephlocal_cli ini --config SRC --out DST --monitor HOST:PORT
        --keyring FILE --client-conf FILE [--pool P] [--user U]

See L{main} for what each prints.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from vorchd.cephlocal import GIB, CephCluster, ceph_unavailable

__all__ = ["main", "with_rbd_volumes"]


def _settings(cluster: CephCluster) -> str:
    return "".join(
        f"{k}={v}\n"
        for k, v in (
            ("monitor", cluster.monitor),
            ("pool", cluster.pool),
            ("user", cluster.user),
            ("keyring", cluster.keyring),
            ("client_conf", cluster.client_conf),
            ("conf", cluster.conf),
        )
    )


def with_rbd_volumes(ini: str, settings: dict[str, str]) -> str:
    """
    The ini text C{ini} with its C{[volumes]} section on the C{rbd} backend: each of
    C{settings} (C{rbd_monitors}, C{rbd_pool}, ...) and C{backend = rbd} replacing the
    line that sets it there, or added under the section's header (the section added at
    the end if there is none). Every other line, comments included, is kept as it is.
    """
    wanted = {"backend": "rbd", **settings}
    lines = ini.splitlines()
    header = next((i for i, line in enumerate(lines) if line.strip() == "[volumes]"), None)
    if header is None:
        body = "".join(f"{k} = {v}\n" for k, v in wanted.items())
        return ini + ("\n" if ini and not ini.endswith("\n") else "") + f"\n[volumes]\n{body}"
    end = next(
        (i for i in range(header + 1, len(lines)) if lines[i].lstrip().startswith("[")),
        len(lines),
    )
    for i in range(header + 1, end):
        key = re.match(r"^([A-Za-z_]+)\s*[=:]", lines[i])
        if key and key[1] in wanted:
            lines[i] = f"{key[1]} = {wanted.pop(key[1])}"
    lines[header + 1 : header + 1] = [f"{k} = {v}" for k, v in wanted.items()]
    return "\n".join(lines) + "\n"


def _write_ini(args: argparse.Namespace) -> None:
    source = Path(args.config)
    text = with_rbd_volumes(
        source.read_text(encoding="utf-8"),
        {
            "rbd_monitors": args.monitor,
            "rbd_pool": args.pool,
            "rbd_user": args.user,
            "rbd_keyring": args.keyring,
            "rbd_client_conf": args.client_conf,
        },
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = out.with_name(out.name + ".new")
    new.write_text(text, encoding="utf-8")
    # It may hold a Redis password: as readable as the ini it was copied from.
    shutil.copymode(source, new)
    new.replace(out)


def main(argv: Sequence[str] | None = None) -> int:
    """
    C{up}: make the cluster in C{--dir} (or start it again, or find it running), then
    print its settings as C{key=value} lines (C{state} first: C{made}, C{started} or
    C{running}; then C{monitor}, C{pool}, C{user}, C{keyring}, C{client_conf}, C{conf}).
    C{down}: stop its daemons (state kept) and print C{stopped=NAMES}. C{status}: print
    its settings and exit 0 if it runs, 3 if not. C{ini}: write C{--out}, a copy of the
    ini C{--config} with its volumes on the cluster (L{with_rbd_volumes}). Errors: exit
    1, the reason on stderr.
    """
    parser = argparse.ArgumentParser(prog="python -m vorchd.cephlocal_cli")
    parser.add_argument("command", choices=("up", "down", "status", "ini"))
    parser.add_argument("--dir", help="the cluster's state directory (up, down, status)")
    parser.add_argument("--port", type=int, help="the monitor's port when made (default 6789)")
    parser.add_argument("--pool", default="vorchd")
    parser.add_argument("--user", default="vorchd")
    parser.add_argument("--store-gib", type=int, default=10, help="the OSD's size when made")
    for option in ("--config", "--out", "--monitor", "--keyring", "--client-conf"):
        parser.add_argument(option, help="(ini)")
    args = parser.parse_args(argv)
    try:
        if args.command == "ini":
            given = (args.config, args.out, args.monitor, args.keyring, args.client_conf)
            if not all(given):
                parser.error("ini needs --config, --out, --monitor, --keyring, --client-conf")
            _write_ini(args)
            return 0
        if not args.dir:
            parser.error(f"{args.command} needs --dir")
        cluster = CephCluster(
            args.dir,
            port=args.port or 6789,
            pool=args.pool,
            user=args.user,
            objectstore="bluestore",
            store_bytes=args.store_gib * GIB,
        )
        if args.command == "down":
            print(f"stopped={' '.join(cluster.stop())}")
            return 0
        if args.command == "status":
            up = cluster.made() and cluster.running()
            sys.stdout.write(f"state={'running' if up else 'stopped'}\n" + _settings(cluster))
            return 0 if up else 3
        if cluster.made() and cluster.running():
            state = "running"
        else:
            why = ceph_unavailable()
            if why:
                raise RuntimeError(why)
            state = "started" if cluster.made() else "made"
            cluster.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(e, file=sys.stderr)
        return 1
    sys.stdout.write(f"state={state}\n" + _settings(cluster))
    return 0


if __name__ == "__main__":
    sys.exit(main())
