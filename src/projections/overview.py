"""How each projection is doing, as every process can see it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from ledger import events_table
from projections import status as st

Status = Literal["running", "rebuilding", "stopped", "failed"]


@dataclass(frozen=True)
class Overview:
    name: str
    version: str
    position: int
    head: int
    status: Status
    error: dict[str, Any] | None
    rebuild: dict[str, Any] | None
    rebuild_requested: bool

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "position": self.position,
            "head": self.head,
            "lag": self.lag,
            "status": self.status,
            "error": self.error,
            "rebuild": self.rebuild,
            "rebuild_requested": self.rebuild_requested,
        }


def overview(conn: psycopg.Connection[Any], name: str = "users") -> Overview:
    row = st.read_status(conn, name)
    position = st.read_position(conn, name, lock=False)
    head = events_table.head(conn)
    rebuilding = st.lock_is_held(conn, st.rebuild_lock(name))
    leading = st.lock_is_held(conn, st.leader_lock(name))
    error = row.error if row else None
    status: Status
    if error is not None:
        status = "failed"
    elif rebuilding:
        status = "rebuilding"
    elif leading:
        status = "running"
    else:
        status = "stopped"
    rebuild = row.rebuild if row else None
    return Overview(
        name=name,
        version=row.version if row else "",
        position=position,
        head=head,
        status=status,
        error=error,
        rebuild=rebuild,
        rebuild_requested=bool(row and row.rebuild_requested),
    )
