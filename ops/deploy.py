"""A city's deployment from one inventory of hosts (ops/inventory.example.json).

    python -m ops.deploy haproxy ops/inventory.example.json > /etc/haproxy/haproxy.cfg
    python -m ops.deploy pgbackrest ops/inventory.example.json > /etc/pgbackrest/pgbackrest.conf
    python -m ops.deploy archiving ops/inventory.example.json >> postgresql.conf
    python -m ops.deploy etcd ops/inventory.example.json db1 > /etc/default/etcd
    python -m ops.deploy patroni ops/inventory.example.json db1 > /etc/patroni/config.yml
    python -m ops.deploy kamailio ops/inventory.example.json > /etc/kamailio/kamailio.cfg
    python -m ops.deploy dispatcher ops/inventory.example.json > /etc/kamailio/dispatcher.list

The multi-host tests (tests/cluster) render their balancer from an inventory of their own
network namespaces with this same code, so what operators deploy is what the tests ran.

HAProxy in front of every HTTP service that runs on several hosts (the API, the conversation
gateway, the dialogue workers): a host is taken out of rotation after two failed health checks
half a second apart and back after two good ones; a request whose connection failed is sent to
another host (`redispatch`, `retry-on conn-failure`). A request whose host died before it
answered is replayed on another only when that is safe: a GET, or a write that carries an
Idempotency-Key (the API answers its replay with what it made the first time). Any other write
fails back to its client, which knows whether to repeat it.

PostgreSQL runs on the inventory's `database` hosts under Patroni, which keeps one primary and
a synchronous standby and promotes the standby when the primary dies; etcd (a member on each
database host and one on the balancer, so two of three survive any one) holds Patroni's leader
lock. HAProxy sends PostgreSQL connections only to the host whose Patroni says it is primary.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

# service → (its health path, how long a request may take: the API's long polls wait 30 s)
SERVICES = {
    "api": ("/health", "45s"),
    "gateway": ("/health", "45s"),
    "dialogue": ("/", "30s"),
}

# Replays only what is safe to repeat (module docstring).
SAFE_REPLAYS = "http-request disable-l7-retry if !METH_GET !{ req.hdr(idempotency-key) -m found }"

# A health check may take this long. Without it HAProxy allows `inter` (500 ms), and a host
# answering a storm of creates, whose /health waits for a pooled connection like any request,
# was taken out of rotation while it worked, with the dead one: every request failed for
# seconds. A dead host is still noticed at once: its connections fail (`timeout connect`).
CHECK_TIMEOUT = "2s"
PATRONI_PORT = 8008  # Patroni's REST API on every database host
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380

HEAD = """\
# Made by `python -m ops.deploy haproxy {inventory}`; edit the inventory, not this file.
global
    maxconn 4096
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 60s
    timeout queue 10s
    retries 3
    option redispatch
    retry-on conn-failure empty-response
"""


def haproxy(inventory: dict[str, Any], source: str = "inventory") -> str:
    hosts: dict[str, str] = inventory["hosts"]
    balancer = inventory["balancer"]
    bind = hosts[balancer["host"]]
    parts = [HEAD.format(inventory=source)]
    for service, spec in inventory["services"].items():
        health, timeout = SERVICES[service]
        listen = balancer["ports"][service]
        parts.append(
            f"\nfrontend {service}\n"
            f"    bind {bind}:{listen}\n"
            f"    default_backend {service}\n"
            f"\nbackend {service}\n"
            f"    timeout server {timeout}\n"
            f"    option httpchk GET {health}\n"
            f"    http-check expect status 200\n"
            f"    default-server inter 500ms fall 2 rise 2\n"
            f"    timeout check {CHECK_TIMEOUT}\n"
            f"    {SAFE_REPLAYS}\n"
        )
        for name in spec["hosts"]:
            parts.append(f"    server {name} {hosts[name]}:{spec['port']} check\n")
    if "database" in inventory:
        parts.append(postgres_listen(inventory))
    return "".join(parts)


# Patroni's HAProxy pattern: a TCP proxy whose health check asks each host's Patroni (REST on
# PATRONI_PORT) whether it is the primary; only the primary answers 200. When the primary is
# marked down its sessions are cut (`shutdown-sessions`), so the API's pooled connections fail
# at once and reconnect through here to the new primary instead of hanging on a dead host.
POSTGRES_LISTEN = """
listen postgres
    bind {bind}:{listen}
    mode tcp
    option tcplog
    timeout client 30m
    timeout server 30m
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
"""


def postgres_listen(inventory: dict[str, Any]) -> str:
    hosts: dict[str, str] = inventory["hosts"]
    database = inventory["database"]
    bind = hosts[inventory["balancer"]["host"]]
    listen = inventory["balancer"]["ports"]["postgres"]
    servers = "".join(
        f"    server {name} {hosts[name]}:{database['port']} check port {PATRONI_PORT}\n"
        for name in database["hosts"]
    )
    return POSTGRES_LISTEN.format(bind=bind, listen=listen) + servers


# etcd as Debian's unit starts it: etcd-server's etcd.service reads /etc/default/etcd. Plain HTTP
# on the private LAN, as the other services there.
ETCD = """\
# Made by `python -m ops.deploy etcd {inventory} {host}`; edit the inventory, not this file.
ETCD_NAME={host}
ETCD_DATA_DIR={data}
ETCD_LISTEN_PEER_URLS=http://{address}:{peer}
ETCD_LISTEN_CLIENT_URLS=http://{address}:{client},http://127.0.0.1:{client}
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://{address}:{peer}
ETCD_ADVERTISE_CLIENT_URLS=http://{address}:{client}
ETCD_INITIAL_CLUSTER={cluster}
ETCD_INITIAL_CLUSTER_TOKEN=linli
ETCD_INITIAL_CLUSTER_STATE=new
"""


def etcd(inventory: dict[str, Any], host: str, source: str = "inventory") -> str:
    hosts: dict[str, str] = inventory["hosts"]
    database = inventory["database"]
    cluster = ",".join(f"{name}=http://{hosts[name]}:{ETCD_PEER_PORT}" for name in database["etcd"])
    return ETCD.format(
        inventory=source,
        host=host,
        address=hosts[host],
        data=database.get("etcd_data", "/var/lib/etcd/default"),
        peer=ETCD_PEER_PORT,
        client=ETCD_CLIENT_PORT,
        cluster=cluster,
    )


# Patroni, one file per database host (Debian's patroni unit reads /etc/patroni/config.yml).
# - etcd3: Patroni talks to etcd 3.4's v3 API through its JSON gateway; the v2 API (`etcd:`) is
#   off by default in etcd 3.4 and gone in 3.6.
# - Synchronous mode: the primary acknowledges a commit only once the standby has it, and only
#   a synchronous standby may be promoted. Without it a commit the dead primary acknowledged
#   (an order the API answered 201 for) can be missing on the promoted standby. Not strict:
#   when the standby is gone the primary goes on alone rather than stopping every write.
# - ttl 10, loop_wait 2, retry_timeout 4 (Patroni's rule: loop_wait + 2 * retry_timeout <=
#   ttl): the leader lock expires 8 to 10 s after the primary's last renewal (a few seconds
#   later when the dead host also led etcd: a new etcd leader renews every lease), then the
#   standby promotes itself. Patroni 3.2 and later raise ttl to 20 (their minimum), which makes
#   a failover 10 s longer.
# - Passwords come from the environment (PATRONI_SUPERUSER_PASSWORD and
#   PATRONI_REPLICATION_PASSWORD in /etc/patroni_env.conf, which the unit reads), not from here.
PATRONI = """\
# Made by `python -m ops.deploy patroni {inventory} {host}`; edit the inventory, not this file.
scope: linli
name: {host}

restapi:
  listen: {address}:{rest}
  connect_address: {address}:{rest}

etcd3:
  hosts: [{etcd}]

bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      use_slots: true
  initdb:
  - encoding: UTF8
  - locale: C.UTF-8
  - data-checksums

postgresql:
  listen: {address}:{port}
  connect_address: {address}:{port}
  data_dir: {data}
  bin_dir: {bin_dir}
  pgpass: {data}.pgpass
  use_unix_socket: true
  parameters:
    unix_socket_directories: '{socket}'
  authentication:
    superuser:
      username: {superuser}
    replication:
      username: {replication}
  pg_hba:
  - local all all peer
  - host replication {replication} {network} {auth}
  - host all all {network} {auth}
"""


def patroni(inventory: dict[str, Any], host: str, source: str = "inventory") -> str:
    hosts: dict[str, str] = inventory["hosts"]
    database = inventory["database"]
    return PATRONI.format(
        inventory=source,
        host=host,
        address=hosts[host],
        rest=PATRONI_PORT,
        etcd=", ".join(f"'{hosts[name]}:{ETCD_CLIENT_PORT}'" for name in database["etcd"]),
        port=database["port"],
        data=database["data"],
        bin_dir=database.get("bin_dir", "/usr/lib/postgresql/15/bin"),
        socket=database["socket"],
        superuser=database["users"]["superuser"],
        replication=database["users"]["replication"],
        network=database["network"],
        auth=database["auth"],
    )


# Backups: pgBackRest, full and incremental base backups plus every WAL segment archived as
# PostgreSQL closes it, so a restore recovers up to the last archived segment.
PGBACKREST = """\
# Made by `python -m ops.deploy pgbackrest {inventory}`; edit the inventory, not this file.
[global]
repo1-path={repo}
repo1-retention-full=4
log-path={repo}/log
lock-path={repo}/lock
start-fast=y
compress-type=zst

[{stanza}]
pg1-path={data}
pg1-socket-path={socket}
pg1-port={port}
"""


def pgbackrest(inventory: dict[str, Any], source: str = "inventory") -> str:
    spec = inventory["backup"]
    return PGBACKREST.format(inventory=source, **spec)


def archiving(config: str, stanza: str) -> str:
    """PostgreSQL's settings that hand each finished WAL segment to pgBackRest."""
    return (
        "archive_mode = on\n"
        f"archive_command = 'pgbackrest --config={config} --stanza={stanza} archive-push %p'\n"
        "archive_timeout = 60\n"  # a quiet database still archives at least once a minute
        "wal_level = replica\n"
    )


# Redis: the first of the inventory's `redis` hosts starts as the master, the others replicate
# it, and Sentinels (one on each of `sentinels`, three hosts so that two agree when any one
# dies) promote a replica when the master stops answering for 2 s. Clients find the master
# through the Sentinels: REDIS_URL is `redis-url`'s answer (workorders/redis_url.py).
# Append-only with a write a second: the tracker and the handoffs survive a restart; the event
# stream's outbox is in PostgreSQL anyway.
REDIS_PORT, SENTINEL_PORT = 6379, 26379
REDIS = """\
# Made by `python -m ops.deploy redis {inventory} {host}`; edit the inventory, not this file.
bind {address}
port {port}
protected-mode no
dir {data}
appendonly yes
appendfsync everysec
{replicaof}"""
SENTINEL = """\
# Made by `python -m ops.deploy sentinel {inventory} {host}`; edit the inventory, not this file.
# Sentinel rewrites this file as it learns the replicas and the current master.
bind {address}
port {sentinel_port}
sentinel resolve-hostnames no
sentinel monitor {service} {master} {port} {quorum}
sentinel down-after-milliseconds {service} 2000
sentinel failover-timeout {service} 10000
sentinel parallel-syncs {service} 1
"""


def _redis(inventory: dict[str, Any]) -> dict[str, Any]:
    spec = {"service": "linli", "port": REDIS_PORT, "data": "/var/lib/redis", **inventory["redis"]}
    spec["master"] = inventory["hosts"][spec["hosts"][0]]
    return spec


def redis(inventory: dict[str, Any], host: str, source: str = "inventory") -> str:
    spec = _redis(inventory)
    address = inventory["hosts"][host]
    replicaof = "" if address == spec["master"] else f"replicaof {spec['master']} {spec['port']}\n"
    return REDIS.format(
        inventory=source, host=host, address=address, port=spec["port"], data=spec["data"],
        replicaof=replicaof,
    )  # fmt: skip


def sentinel(inventory: dict[str, Any], host: str, source: str = "inventory") -> str:
    spec = _redis(inventory)
    return SENTINEL.format(
        inventory=source, host=host, address=inventory["hosts"][host], port=spec["port"],
        sentinel_port=SENTINEL_PORT, service=spec["service"], master=spec["master"],
        quorum=len(spec["sentinels"]) // 2 + 1,
    )  # fmt: skip


def redis_url(inventory: dict[str, Any]) -> str:
    """Every service's REDIS_URL: the master that the Sentinels name."""
    spec = _redis(inventory)
    sentinels = ",".join(
        f"{inventory['hosts'][name]}:{SENTINEL_PORT}" for name in spec["sentinels"]
    )
    return f"redis+sentinel://{sentinels}/{spec['service']}/0"


# SIP: Kamailio on the inventory's `sip` host in front of the hotlines (docs/deployment.md, "SIP:
# Kamailio in front of the hotlines"). Callers (the trunk, the PBX) send every call to Kamailio;
# it hands each INVITE to one hotline by a hash of its Call-ID, asks every hotline OPTIONS each
# second, and takes one that fails two pings in a row out of rotation until it answers two
# again. An INVITE a hotline leaves unanswered for a second (a retransmission included) goes to
# the next one at once, and that hotline is out of rotation from then on.
#
# Identity: a hotline takes the caller's number from P-Asserted-Identity or From only when the
# INVITE comes from a peer it trusts, and Kamailio is now the only peer it sees. So Kamailio
# admits calls only from the peers the hotlines used to trust (`trusted`: the trunk, the PBX,
# the network the SOS terminals call from) and refuses everyone else with 403; the hotlines
# trust Kamailio's address alone (HOTLINE_TRUSTED_PEERS in the host.env ops/units.py writes).
# Terminals are challenged by the hotline itself (SIP digest) as before, through Kamailio; the
# hash over the Call-ID sends the INVITE that answers the challenge to the hotline whose nonce
# it carries (round robin would send it to the other, which refuses a nonce it never issued).
# Calls stay record-routed through Kamailio, so in-dialog requests (ACK, BYE, re-INVITE) come
# to a hotline from the address its INVITE came from, which is all a hotline accepts them from;
# Kamailio in turn passes them only from the hotlines and from the host that set the call up
# (its address rides in the Record-Route), so knowing a call's Call-ID and tags is not enough
# to hang it up or to move its audio elsewhere. Media (RTP) goes straight between the caller
# and the hotline.
SIP_PORT, HOTLINE_SIP_PORT = 5060, 5070
SIP_SET = 1  # the dispatcher set of the hotlines
SIP_PING_SECONDS = 1  # OPTIONS to every hotline this often
SIP_DOWN_AFTER, SIP_UP_AFTER = 2, 2  # failed pings out of rotation, answered pings back in
SIP_NO_ANSWER_MS = 1000  # a request (ping, INVITE) a hotline leaves unanswered this long failed

KAMAILIO = """\
#!KAMAILIO
# Made by `python -m ops.deploy kamailio {inventory}`; edit the inventory, not this file.
# The hotlines: {list_file} (`python -m ops.deploy dispatcher`).
# What this does and why: ops/deploy.py ("SIP") and docs/deployment.md.

# The peers whose calls are admitted, with the number they assert: the trunk, the PBX, the
# network the SOS terminals call from. Everyone else gets 403.
#!define TRUSTED_PEERS "{trusted}"

debug=2
log_stderror=no
log_facility=LOG_LOCAL0
fork=yes
children={children}
disable_tcp=yes
auto_aliases=no
listen=udp:{address}:{port}
sip_warning=no
server_signature=no

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "ctl.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "ipops.so"
loadmodule "dispatcher.so"

# Each hotline and its state (AP in rotation, IP out of it):
#   kamcmd -s unix:{ctl} dispatcher.list
modparam("ctl", "binrpc", "unix:{ctl}")

# Hotlines are on the LAN and answer within milliseconds: a ping or an INVITE left unanswered
# for {no_answer_ms} ms (one retransmission included) went to a dead host. Once a hotline has
# said 100 Trying its final answer comes at once (200, or 486 when it is full); 10 s at most.
modparam("tm", "fr_timer", {no_answer_ms})
modparam("tm", "fr_inv_timer", 10000)

modparam("dispatcher", "list_file", "{list_file}")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "ds_ping_from", "sip:kamailio@{address}")
modparam("dispatcher", "ds_ping_interval", {ping})
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", {down})
modparam("dispatcher", "ds_inactive_threshold", {up})
modparam("dispatcher", "ds_timer_mode", 1)
"""

KAMAILIO_ROUTES = """
request_route {
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	if (!sanity_check("1511", "7")) {
		xlog("L_WARN", "malformed SIP from $si:$sp\\n");
		exit;
	}
	if (has_totag()) {
		route(WITHIN_DIALOG);
		exit;
	}
	if (is_method("CANCEL")) {
		if (t_check_trans()) {
			t_relay();
		}
		exit;
	}
	if (is_method("ACK")) {
		exit;
	}
	if (t_precheck_trans()) {
		t_check_trans();
		exit;
	}
	t_check_trans();
	if (is_method("OPTIONS") && uri == myself) {
		# A trunk's keep-alive: this number is up while a hotline is.
		if (ds_is_active("HOTLINES")) {
			sl_send_reply("200", "OK");
		} else {
			sl_send_reply("503", "No Hotline");
		}
		exit;
	}
	if (!is_method("INVITE")) {
		append_to_reply("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\\r\\n");
		sl_send_reply("405", "Method Not Allowed");
		exit;
	}
	# The hotlines believe the number of every call passed to them: pass only the trusted ones.
	if (!is_in_subnet("$si", TRUSTED_PEERS)) {
		xlog("L_WARN", "call $ci from $si refused: not a trusted peer\\n");
		sl_send_reply("403", "Forbidden");
		exit;
	}
	# In-dialog requests come this way too; `src` is where the call came from.
	remove_hf("Route");
	record_route(";src=$si");
	# A hotline by a hash of the Call-ID (0): the INVITE answering a digest challenge reaches
	# the hotline that issued its nonce. Hotlines out of rotation are skipped.
	if (!ds_select_dst("HOTLINES", "0")) {
		xlog("L_ERR", "call $ci: no hotline is up\\n");
		append_to_reply("Retry-After: 10\\r\\n");
		sl_send_reply("503", "No Hotline");
		exit;
	}
	xlog("L_INFO", "call $ci to $du\\n");
	t_on_failure("NEXT_HOTLINE");
	if (!t_relay()) {
		sl_reply_error();
	}
	exit;
}

# ACK, BYE, re-INVITE, INFO: along the Record-Route, and only from either end of the call.
route[WITHIN_DIALOG] {
	$var(src) = "";
	if (is_present_hf("Route")) {
		$var(src) = $(route_uri{uri.param,src});
	}
	if (loose_route()) {
		if ($si != $var(src) && !ds_is_from_list("HOTLINES")) {
			xlog("L_WARN", "call $ci: $rm from $si refused: not an end of the call\\n");
			sl_send_reply("403", "Forbidden");
			exit;
		}
		if (!t_relay()) {
			sl_reply_error();
		}
		exit;
	}
	if (is_method("ACK")) {
		if (t_check_trans()) {
			t_relay();
		}
		exit;
	}
	sl_send_reply("404", "Not Here");
	exit;
}

# No answer from the hotline in time (it is dead: out of rotation now), or 486 (full) or 500
# (it failed on this call): the next hotline.
failure_route[NEXT_HOTLINE] {
	if (t_is_canceled()) {
		exit;
	}
	if (t_branch_timeout() || t_check_status("486|500")) {
		if (t_branch_timeout() && !t_branch_replied()) {
			xlog("L_WARN", "call $ci: no answer from $xavp(_dsdst_=>uri)\\n");
			ds_mark_dst("ip");
		}
		if (ds_next_dst()) {
			xlog("L_INFO", "call $ci to $du\\n");
			t_on_failure("NEXT_HOTLINE");
			t_relay();
			exit;
		}
	}
}

# A ping's verdict names the hotline in $ru; a failed INVITE's (ds_mark_dst) in $du.
event_route[dispatcher:dst-down] {
	if ($du == $null) {
		xlog("L_WARN", "hotline $ru down: out of rotation\\n");
	} else {
		xlog("L_WARN", "hotline $du down: out of rotation\\n");
	}
}

event_route[dispatcher:dst-up] {
	xlog("L_NOTICE", "hotline $ru up: back in rotation\\n");
}
"""


def _sip(inventory: dict[str, Any]) -> dict[str, Any]:
    return {
        "port": SIP_PORT,
        "hotline_port": HOTLINE_SIP_PORT,
        "list_file": "/etc/kamailio/dispatcher.list",
        "ctl": "/run/kamailio/kamailio_ctl",
        "children": 4,
        **inventory["sip"],
    }


def _trusted(inventory: dict[str, Any], entries: list[str]) -> list[str]:
    """Inventory host names, addresses or networks as CIDRs (ValueError for anything else)."""
    hosts: dict[str, str] = inventory["hosts"]
    return [str(ipaddress.ip_network(hosts.get(entry, entry))) for entry in entries]


def kamailio(inventory: dict[str, Any], source: str = "inventory") -> str:
    spec = _sip(inventory)
    if not spec.get("trusted"):
        raise ValueError("sip.trusted: name the trunk or PBX whose calls Kamailio admits")
    head = KAMAILIO.format(
        inventory=source, address=inventory["hosts"][spec["host"]], port=spec["port"],
        trusted=",".join(_trusted(inventory, spec["trusted"])), children=spec["children"],
        list_file=spec["list_file"], ctl=spec["ctl"], ping=SIP_PING_SECONDS,
        down=SIP_DOWN_AFTER, up=SIP_UP_AFTER, no_answer_ms=SIP_NO_ANSWER_MS,
    )  # fmt: skip
    return head + KAMAILIO_ROUTES.replace('"HOTLINES"', f'"{SIP_SET}"')


def dispatcher(inventory: dict[str, Any], source: str = "inventory") -> str:
    """Kamailio's dispatcher.list: the hotlines, one set."""
    spec = _sip(inventory)
    lines = [
        f"# Made by `python -m ops.deploy dispatcher {source}`; edit the inventory, not this file.",
        "# set destination flags priority",
    ]
    for name in spec["hotlines"]:
        lines.append(f"{SIP_SET} sip:{inventory['hosts'][name]}:{spec['hotline_port']} 0 0")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.deploy")
    parser.add_argument(
        "what",
        choices=["haproxy", "pgbackrest", "archiving", "etcd", "patroni", "redis", "sentinel",
                 "redis-url", "kamailio", "dispatcher"],
    )  # fmt: skip
    parser.add_argument("inventory", type=Path)
    parser.add_argument(
        "host", nargs="?", help="etcd, patroni, redis, sentinel: the host it is for"
    )
    args = parser.parse_args()
    inventory = json.loads(args.inventory.read_text())
    if args.what in ("etcd", "patroni", "redis", "sentinel"):  # one file per host: its address
        if args.host not in inventory["hosts"]:
            parser.error(f"{args.what} needs one of the inventory's hosts, not {args.host!r}")
        files = {"etcd": etcd, "patroni": patroni, "redis": redis, "sentinel": sentinel}
        per_host = files[args.what]
        sys.stdout.write(per_host(inventory, args.host, str(args.inventory)))
        return
    if args.what == "archiving":  # postgresql.conf's lines, for /etc/pgbackrest/pgbackrest.conf
        stanza = inventory["backup"]["stanza"]
        sys.stdout.write(archiving("/etc/pgbackrest/pgbackrest.conf", stanza))
        return
    if args.what == "redis-url":
        sys.stdout.write(redis_url(inventory) + "\n")
        return
    renderers = {"haproxy": haproxy, "pgbackrest": pgbackrest}
    render = {**renderers, "kamailio": kamailio, "dispatcher": dispatcher}[args.what]
    sys.stdout.write(render(inventory, str(args.inventory)))


if __name__ == "__main__":
    main()
