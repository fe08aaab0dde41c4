"""
The ini file and the C{VORCHD_*} environment overrides, read into one frozen L{Settings}.

Pure apart from reading the one file: the daemon, install.sh and the tests all build
their settings here, so a setting means the same thing everywhere. install.sh reads them
through L{vorchd.config_cli} (C{python -m vorchd.config_cli get KEY...}).
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from attrs import evolve, field, frozen

from vorchd.model import RESOURCES
from vorchd.network import NetworkSettingError, NetworkSettings, parse_attachment
from vorchd.volume_xml import CephPool

DEFAULT_CONFIG = "etc/vorchd.ini"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_SSH_TEMPLATE = "qemu+ssh://{userat}{host}/system"


class ConfigError(ValueError):
    """
    The ini file (or an override) says something vorchd cannot use.
    """


@frozen
class RedisAddress:
    """
    Where the state store lives, parsed from a URL: C{redis://[:password@]host:port/db}
    names one Redis; C{redis+sentinel://[:password@]host:port,host:port,.../MASTER/db}
    names the Redis Sentinels that know which Redis is the master called C{MASTER} now.

    For a Sentinel URL, C{host} and C{port} are the first Sentinel's (what install.sh
    pings), C{master} is the master's name and C{sentinels} every Sentinel. The password
    is the Redis servers' (Sentinels are asked without one).
    """

    host: str
    port: int
    db: int
    password: str | None = None
    master: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        if url.startswith("redis+sentinel://"):
            return cls._from_sentinel_url(url)
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ConfigError(
                f"redis url {url!r}: expected redis://host[:port][/db]"
                " or redis+sentinel://host:port,host:port,.../MASTER[/db]"
            )
        try:
            port = parts.port or 6379
            db = int(parts.path.strip("/") or 0)
        except ValueError as e:
            raise ConfigError(f"redis url {url!r}: {e}") from None
        return cls(parts.hostname, port, db, parts.password)

    @classmethod
    def _from_sentinel_url(cls, url: str) -> RedisAddress:
        # urlsplit cannot read several host:port pairs in one netloc: split by hand.
        expected = "expected redis+sentinel://[:password@]host:port,.../MASTER[/db]"
        rest = url[len("redis+sentinel://") :]
        netloc, _, path = rest.partition("/")
        password = None
        if "@" in netloc:
            userinfo, _, netloc = netloc.rpartition("@")
            password = unquote(userinfo.partition(":")[2]) or None
        sentinels = []
        for item in netloc.split(","):
            host, sep, port = item.strip().rpartition(":")
            host = host.strip("[]")
            if not sep or not host or item.strip().endswith("]"):
                host, port = item.strip().strip("[]"), "26379"
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"redis url {url!r}: bad Sentinel {item!r}; {expected}")
            sentinels.append((host, int(port)))
        master, _, db = path.strip("/").partition("/")
        if not master:
            raise ConfigError(f"redis url {url!r}: no master name; {expected}")
        if not (db or "0").isdigit():
            raise ConfigError(f"redis url {url!r}: db {db!r} is not a number; {expected}")
        first = sentinels[0]
        return cls(first[0], first[1], int(db or 0), password, unquote(master), tuple(sentinels))


@frozen
class Settings:
    """
    Everything the daemon is told before it starts.

    Each attribute is documented where an operator sets it: in etc/vorchd.ini.
    """

    port: int = 80
    interface: str = ""
    redis: RedisAddress = RedisAddress("127.0.0.1", 6379, 0)
    key_prefix: str = "vorchd"
    pm_file: str | None = None
    image_file: str | None = None
    flavor_file: str | None = None
    ssh_uri_template: str = DEFAULT_SSH_TEMPLATE
    pool_name: str = "vorchd"
    pool_path: str = "/var/lib/vorchd/pool"
    threads: int = 8
    connect_timeout: float = 20.0
    call_timeout: float = 120.0
    reconnect_max_delay: float = 60.0
    domain_type: str = "auto"
    console_log_dir: str = "/var/log/libvirt/qemu"
    stop_timeout: float = 60.0
    migrate_timeout: float = 600.0
    network: NetworkSettings = NetworkSettings()
    policy: str = "first-fit"
    ratios: Mapping[str, float] = field(factory=lambda: {"cpu": 1.0, "ram": 1.0, "disk": 1.0})
    max_attempts: int = 3
    allocation_options: Mapping[str, str] = field(factory=dict)
    image_cache_dir: str = "/var/lib/vorchd/images/cache"
    image_fetch_options: Mapping[str, object] = field(factory=dict)
    min_replicas_acked: int = 0
    replicas_ack_timeout: float = 1.0
    lease: float = 30.0
    reconcile_interval: float = 60.0
    admin_port: int | None = None
    admin_interface: str = "127.0.0.1"
    admin_passwd_file: str = "/etc/vorchd/admin.passwd"
    access_log: str | None = None
    access_log_max_bytes: int = 10_000_000
    access_log_keep: int = 5
    daemon_log_max_bytes: int = 1_000_000
    daemon_log_keep: int = 10
    volume_backend: str = "local"
    ceph: CephPool | None = None


def _ceph_pool(get, base: str, path: str) -> CephPool:
    """
    The [volumes] rbd_* settings: monitors, pool, user, the keyring holding its key, and
    the client conf QEMU is given.
    """
    monitors = []
    for item in (get("volumes", "rbd_monitors", "127.0.0.1:6789") or "").split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"config {path}: [volumes] rbd_monitors: {item!r} is not host:port")
        monitors.append((host.strip("[]"), int(port)))
    default_keyring = "/etc/ceph/ceph.client.admin.keyring"
    keyring = os.path.join(base, get("volumes", "rbd_keyring", default_keyring) or "")
    try:
        with open(keyring, encoding="utf-8") as f:
            found = re.search(r"^\s*key\s*=\s*(\S+)", f.read(), re.M)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {path}: [volumes] rbd_keyring {keyring}: {e}") from None
    if found is None:
        raise ConfigError(f"config {path}: [volumes] rbd_keyring {keyring} holds no key")
    conf = get("volumes", "rbd_client_conf", "") or ""
    return CephPool(
        tuple(monitors),
        get("volumes", "rbd_pool", "rbd") or "rbd",
        get("volumes", "rbd_user", "admin") or "admin",
        found[1],
        os.path.normpath(os.path.join(base, conf)) if conf else "",
    )


def _positive(value: float, what: str) -> float:
    if value <= 0:
        raise ConfigError(f"{what} must be positive, not {value}")
    return value


def _image_fetch_options(get, number, base: str) -> dict[str, object]:
    """
    The [images] settings for fetching remote image sources over ssh.
    """
    policy = get("images", "host_key_policy", "accept-new") or "accept-new"
    if policy not in ("yes", "accept-new", "no"):
        raise ConfigError(
            f"[images] host_key_policy must be yes, accept-new or no, not {policy!r}"
        )

    def path(key: str) -> str | None:
        raw = get("images", key, "")
        return os.path.normpath(os.path.join(base, raw)) if raw else None

    return {
        "host_key_policy": policy,
        "known_hosts": path("known_hosts"),
        "identity": path("identity"),
        "port": number("images", "ssh_port", None),
        "timeout": _positive(number("images", "fetch_timeout", 600.0, float), "fetch_timeout"),
        "ssh_options": shlex.split(get("images", "ssh_options", "") or ""),
    }


def load_settings(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """
    Read the ini file at C{path} (or C{VORCHD_CONFIG}, or the default), then apply the
    environment overrides, then C{overrides} (command-line options), in that order.

    @raise ConfigError: the file cannot be read or a value is wrong; the message names it.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get("VORCHD_CONFIG") or DEFAULT_CONFIG
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise ConfigError(f"config {path}: {e}") from None
    base = os.path.dirname(os.path.abspath(path))

    def get(section: str, key: str, default: str | None = None) -> str | None:
        return parser.get(section, key, fallback=default)

    def number(section: str, key: str, default, kind=int):
        raw = get(section, key)
        if raw is None or raw.strip() == "":
            return default
        try:
            return kind(raw)
        except ValueError:
            raise ConfigError(
                f"config {path}: [{section}] {key} = {raw!r} is not a number"
            ) from None

    def file_setting(key: str) -> str | None:
        raw = get("inventory", key)
        if not raw:
            return None
        # Relative paths in the ini are relative to the ini, not to wherever twistd runs.
        return os.path.normpath(os.path.join(base, raw))

    try:
        ratios = {
            r: _positive(number("allocation", f"{r}_ratio", 1.0, float), f"{r}_ratio")
            for r in RESOURCES
        }
        values: dict[str, object] = dict(
            port=number("server", "port", 80),
            interface=get("server", "interface", "") or "",
            redis=RedisAddress.from_url(get("redis", "url", DEFAULT_REDIS) or DEFAULT_REDIS),
            key_prefix=get("redis", "key_prefix", "vorchd") or "vorchd",
            min_replicas_acked=int(number("redis", "min_replicas_acked", 0)),
            replicas_ack_timeout=_positive(
                number("redis", "replicas_ack_timeout", 1.0, float), "replicas_ack_timeout"
            ),
            pm_file=file_setting("pm_file"),
            image_file=file_setting("image_file"),
            flavor_file=file_setting("flavor_file"),
            ssh_uri_template=get("libvirt", "ssh_uri_template", DEFAULT_SSH_TEMPLATE),
            pool_name=get("libvirt", "pool_name", "vorchd") or "vorchd",
            pool_path=get("libvirt", "pool_path", "/var/lib/vorchd/pool"),
            threads=int(_positive(number("libvirt", "threads", 8), "threads")),
            connect_timeout=_positive(
                number("libvirt", "connect_timeout", 20.0, float), "connect_timeout"
            ),
            call_timeout=_positive(
                number("libvirt", "call_timeout", 120.0, float), "call_timeout"
            ),
            reconnect_max_delay=_positive(
                number("libvirt", "reconnect_max_delay", 60.0, float), "reconnect_max_delay"
            ),
            domain_type=get("libvirt", "domain_type", "auto") or "auto",
            console_log_dir=get("libvirt", "console_log_dir", "/var/log/libvirt/qemu"),
            stop_timeout=_positive(number("libvirt", "stop_timeout", 60.0, float), "stop_timeout"),
            migrate_timeout=_positive(
                number("libvirt", "migrate_timeout", 600.0, float), "migrate_timeout"
            ),
            policy=get("allocation", "policy", "first-fit") or "first-fit",
            ratios=ratios,
            max_attempts=int(_positive(number("allocation", "max_attempts", 3), "max_attempts")),
            lease=_positive(number("server", "lease", 30.0, float), "lease"),
            image_cache_dir=os.path.normpath(
                os.path.join(base, get("images", "cache_dir", "/var/lib/vorchd/images/cache"))
            ),
            image_fetch_options=_image_fetch_options(get, number, base),
            reconcile_interval=_positive(
                number("server", "reconcile_interval", 60.0, float), "reconcile_interval"
            ),
            access_log=(
                os.path.normpath(os.path.join(base, get("logging", "access_log")))
                if get("logging", "access_log")
                else None
            ),
            access_log_max_bytes=int(
                _positive(
                    number("logging", "access_log_max_bytes", 10_000_000), "access_log_max_bytes"
                )
            ),
            access_log_keep=int(
                _positive(number("logging", "access_log_keep", 5), "access_log_keep")
            ),
            daemon_log_max_bytes=int(
                _positive(
                    number("logging", "daemon_log_max_bytes", 1_000_000), "daemon_log_max_bytes"
                )
            ),
            daemon_log_keep=int(
                _positive(number("logging", "daemon_log_keep", 10), "daemon_log_keep")
            ),
        )
        values["volume_backend"] = get("volumes", "backend", "local") or "local"
        if values["volume_backend"] not in ("local", "rbd"):
            raise ConfigError(
                f"config {path}: [volumes] backend must be local or rbd,"
                f" not {values['volume_backend']!r}"
            )
        if values["volume_backend"] == "rbd":
            values["ceph"] = _ceph_pool(get, base, path)
        if int(values["min_replicas_acked"]) < 0:
            raise ConfigError("[redis] min_replicas_acked must be 0 or more")
        if values["domain_type"] not in ("auto", "kvm", "qemu"):
            raise ConfigError(
                f"config {path}: [libvirt] domain_type must be auto, kvm or qemu,"
                f" not {values['domain_type']!r}"
            )
        if parser.has_section("allocation"):
            options = dict(parser.items("allocation"))
            if options.get("plugin_path"):
                options["plugin_path"] = ":".join(
                    os.path.normpath(os.path.join(base, d))
                    for d in options["plugin_path"].split(":")
                    if d.strip()
                )
            values["allocation_options"] = options
        if parser.has_section("network"):
            try:
                values["network"] = NetworkSettings.from_section(dict(parser.items("network")))
            except NetworkSettingError as e:
                raise ConfigError(f"config {path}: {e}") from None
        values["admin_interface"] = get("admin", "interface", "127.0.0.1") or "127.0.0.1"
        values["admin_passwd_file"] = os.path.normpath(
            os.path.join(base, get("admin", "passwd_file", "/etc/vorchd/admin.passwd"))
        )
        if "VORCHD_PORT" in environ:
            try:
                values["port"] = int(environ["VORCHD_PORT"])
            except ValueError:
                raise ConfigError(
                    f"VORCHD_PORT={environ['VORCHD_PORT']!r} is not a port"
                ) from None
        if "VORCHD_REDIS" in environ:
            values["redis"] = RedisAddress.from_url(environ["VORCHD_REDIS"])
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            if key == "network_attach":
                # The option replaces the section's attach; per-driver lines still apply.
                network = values.get("network", NetworkSettings())
                try:
                    values["network"] = evolve(network, attach=parse_attachment(value))
                except NetworkSettingError as e:
                    raise ConfigError(f"--network: {e}") from None
            else:
                values[key] = value
        # "auto" keeps daemons side by side apart: the admin port follows the REST port.
        admin = (get("admin", "port", "auto") or "").strip().lower()
        if admin in ("", "off", "none"):
            values["admin_port"] = None
        elif admin == "auto":
            values["admin_port"] = int(values["port"]) + 10000
        else:
            values["admin_port"] = number("admin", "port", None)
        if not 0 <= int(values["port"]) <= 65535:
            raise ConfigError(f"port {values['port']} is out of range")
    except ConfigError as e:
        if str(e).startswith(("config ", "VORCHD_", "port ", "--network")):
            raise
        raise ConfigError(f"config {path}: {e}") from None
    return Settings(**values)
