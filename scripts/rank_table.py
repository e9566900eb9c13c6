"""This node's share of an Ascend rank table: used by run_distribute_train_ascend_ranktable.sh.

    python scripts/rank_table.py <rank_table.json> [server_id]

Prints RANK_SIZE (all devices in the table) on the first line, then one line per device of this node:
`<device_id> <rank_id> <cpus> <numa>`, where <cpus> is the node's share of CPU cores for that device in taskset's
syntax ("0-23", "0,2,4") or "-" when there are fewer cores than devices, and <numa> the NUMA node the device's
process is bound to with BIND_NUMA=1: the host's NUMA nodes dealt out in order, an equal run of devices to each
(8 devices on 2 nodes: 0 0 0 0 1 1 1 1), or "-" when the host reports none. This node is the server whose
server_id is the given one, else the only server, else the one whose server_id is an IP address of this host.
Needs the repository on the module path (the launch script sets PYTHONPATH) for `vit_ms`'s range writer.
"""
import json
import os
import socket
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from vit_ms.train.distributed import index_ranges


class RankTableError(Exception):
    pass


def local_addresses() -> List[str]:
    """This host's IP addresses: from its name, and the source address of a (never sent) UDP packet."""
    addresses = {"127.0.0.1"}
    try:
        addresses.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("10.255.255.255", 1))  # UDP connect sends nothing; it picks the outgoing interface
            addresses.add(sock.getsockname()[0])
    except OSError:
        pass
    return sorted(addresses)


def split_cpus(cpus: Sequence[int], num_devices: int) -> List[Optional[str]]:
    """Contiguous equal shares of `cpus`, one per device (None for all when there are fewer cpus than devices)."""
    per = len(cpus) // num_devices
    if per == 0:
        return [None] * num_devices
    cpus = sorted(cpus)
    return [index_ranges(cpus[i * per:(i + 1) * per]) for i in range(num_devices)]


def numa_nodes(root: str = "/sys/devices/system/node") -> List[int]:
    """The host's NUMA node ids, from sysfs ([] when it has none to show)."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(int(name[4:]) for name in names if name.startswith("node") and name[4:].isdigit())


def split_numa(nodes: Sequence[int], num_devices: int) -> List[Optional[int]]:
    """Device i of n gets node nodes[i * len(nodes) // n]: equal runs of devices per node, in order."""
    if not nodes:
        return [None] * num_devices
    return [nodes[i * len(nodes) // num_devices] for i in range(num_devices)]


def plan(table: Dict, server_id: str, addresses: Sequence[str], cpus: Sequence[int],
         nodes: Sequence[int] = ()) -> Tuple[int, List[Tuple[str, str, Optional[str], Optional[int]]]]:
    """(RANK_SIZE, [(device_id, rank_id, cpus, numa node), ...] for this node's devices)."""
    try:
        servers = table["server_list"]
        rank_size = sum(len(server["device"]) for server in servers)
        ids = [str(server["server_id"]) for server in servers]
    except (KeyError, TypeError) as err:
        raise RankTableError(f"it has no server_list with server_id and device entries ({err!r})") from err
    if server_id:
        chosen = [s for s, i in zip(servers, ids) if i == server_id]
        if not chosen:
            raise RankTableError(f"SERVER_ID={server_id} is not in it; its server_ids are {', '.join(ids)}")
    elif len(servers) == 1:
        chosen = servers
    else:
        chosen = [s for s, i in zip(servers, ids) if i in addresses]
        if len(chosen) != 1:
            raise RankTableError(f"cannot tell which of its servers ({', '.join(ids)}) this node is (its addresses: "
                                 f"{', '.join(addresses)}); set SERVER_ID to this node's server_id")
    devices = chosen[0]["device"]
    if not devices:
        raise RankTableError("this node's server has no devices")
    shares, numas = split_cpus(cpus, len(devices)), split_numa(nodes, len(devices))
    try:
        return rank_size, [(str(d["device_id"]), str(d["rank_id"]), share, numa)
                           for d, share, numa in zip(devices, shares, numas)]
    except (KeyError, TypeError) as err:
        raise RankTableError(f"a device entry lacks device_id or rank_id ({err!r})") from err


def main(argv: Sequence[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    path, server_id = argv[0], (argv[1] if len(argv) > 1 else "")
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
        rank_size, devices = plan(table, server_id, local_addresses(), sorted(os.sched_getaffinity(0)),
                                  numa_nodes())
    except (OSError, ValueError, RankTableError) as err:
        print(f"error: rank table '{path}': {err}", file=sys.stderr)
        return 2
    print(rank_size)
    for device_id, rank_id, cpus, numa in devices:
        print(device_id, rank_id, cpus or "-", "-" if numa is None else numa)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
