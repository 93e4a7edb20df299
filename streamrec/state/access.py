"""Least privilege in Redis: one ACL user per role, allowed only the commands and keys
that role's code uses (Redis 7 ACL selectors: ``%R~`` read, ``%W~`` write, ``%RW~`` both).

Every role may run the read and write commands and scripts, never a ``@dangerous`` one
(FLUSHALL, FLUSHDB, CONFIG, KEYS, DEBUG, SHUTDOWN, ...). Commands a script runs are checked
against the caller's keys, so the split below holds inside the state scripts too:

- ``stream`` (worker roles ``stream`` and ``all``): the state (users, Markov rows,
  popularity, items, watermarks, counters, erasures) and served lists; models read only;
- ``serving`` (worker role ``serving``): reads everything; writes served lists and user
  vectors (in the user hashes) only; never a Markov row, popularity or a model;
- ``trainer``: reads everything; writes models only;
- ``operator`` (``streamrec state dump``, ``items``, ``users forget``): every key of the
  prefix, still no dangerous command;
- ``monitor`` (redis_exporter, health checks): no key at all; server introspection only
  (INFO, CONFIG GET, SLOWLOG, LATENCY, CLIENT LIST, MEMORY STATS, CLUSTER INFO).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from streamrec.state.keys import Keys

ROLES = ("stream", "serving", "trainer", "operator", "monitor")
COMMANDS = ("-@all +@read +@write +@connection +evalsha +eval +script|load +script|exists "
            "-@dangerous")
MONITOR_COMMANDS = ("-@all +@connection +info +config|get +slowlog|get +slowlog|len "
                    "+latency|latest +client|list +memory|stats +cluster|info")


def key_patterns(keys: Keys) -> dict[str, list[str]]:
    """Each role's key selectors."""
    p = keys.prefix
    state = [f"{p}u:*", f"{p}mk:*", f"{p}pop*", f"{p}item:*", f"{p}wm:*", f"{p}stats",
             f"{p}erased", f"{p}served:*"]
    return {
        "stream": [*(f"%RW~{k}" for k in state), f"%R~{p}model:*", f"%R~{p}blocked"],
        "serving": [f"%R~{p}*", f"%W~{p}served:*", f"%W~{p}u:*"],
        "trainer": [f"%R~{p}*", f"%RW~{p}model:*"],
        "operator": [f"%RW~{p}*"],
        "monitor": [],
    }


def user_name(role: str) -> str:
    return f"streamrec-{role}"


def acl_lines(keys: Keys, passwords: Mapping[str, str]) -> list[str]:
    """ACL file lines (``aclfile``) for every role; passwords are stored as SHA-256 hashes.
    The default user is turned off."""
    missing = [role for role in ROLES if not passwords.get(role)]
    if missing:
        raise ValueError(f"no password for role(s) {', '.join(missing)}")
    lines = ["user default off resetkeys resetchannels -@all"]
    for role, patterns in key_patterns(keys).items():
        digest = hashlib.sha256(passwords[role].encode()).hexdigest()
        commands = MONITOR_COMMANDS if role == "monitor" else COMMANDS
        lines.append(" ".join(["user", user_name(role), "on", f"#{digest}", "resetkeys",
                               "resetchannels", *patterns, commands]))
    return lines
