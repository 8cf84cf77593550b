"""kombu's filesystem transport (embedded mode's broker) with messages that appear whole.

kombu's own ``_put`` creates the message file under its final name and then writes it; a worker
polling the folder may take the file in between and read it empty or cut, and the JSON error
that follows stops the worker ("Unrecoverable error: JSONDecodeError"). It happened within a
minute of monitor checks being dispatched every second. Here a message is written under a name
the readers skip (``….msg.part``: the queue is what follows the first dot, and readers take
``<queue>.msg`` only) and renamed into place, which POSIX makes atomic within a folder.

The exchange tables (``control_folder/<exchange>.exchange``, which queues a publish goes to) had
the same fault: kombu's ``_queue_bind`` creates the file and only then locks and writes it, so a
publisher reading it in between read it empty, and the publish failed with a JSONDecodeError. A
bind here is serialised by a lock file of its own and writes the table the same way: whole, then
renamed, so a reader sees the old table or the new one, never a part.

And a bind could be skipped before its table was written. kombu's ``queue_bind`` writes the table
only when the binding is new to the transport's state, and the filesystem transport's state is
one per process (``Transport.global_state``): when two threads declared the same queue, the second
found the binding already in the state while the first had not yet written the table, published,
and its messages were routed to no queue and dropped (the first hundred messages of a test, in
CI). Here every bind writes its entry to the table itself, if missing, before it returns.
"""

from __future__ import annotations

import fcntl
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps

__all__ = ["Channel", "Transport"]

# kombu's JSON (its encoder knows the types its messages hold), typed.
_dumps: Callable[[Any], str] = dumps

# Guards the process-wide broker state (kombu's ``filesystem.Transport.global_state``), which the
# threads of a process share through their connections.
_state_lock = threading.Lock()


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # kombu's own signature
        """Puts ``payload`` on ``queue``: written in full under a skipped name, then renamed."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = Path(self.data_folder_out) / name
        partial = final.with_name(f"{name}.part")
        try:
            partial.write_bytes(_dumps(payload).encode())
            partial.replace(final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {str(final)!r} to directory") from exc

    def queue_bind(
        self, queue: Any, exchange: Any = None, routing_key: Any = "", arguments: Any = None, **kwargs: Any
    ) -> None:
        """Binds ``queue`` to ``exchange``: in the process's state once, and in the exchange's table
        (what publishers route by) on every call, so a publish after this call is never dropped."""
        exchange = exchange or "amq.direct"
        entry = self.typeof(exchange).prepare_bind(queue, exchange, routing_key, arguments)  # type: ignore[no-untyped-call]
        with _state_lock:
            if not self.state.has_binding(queue, exchange, routing_key):
                self.state.binding_declare(queue, exchange, routing_key, arguments)
                self.state.exchanges[exchange].setdefault("table", []).append(entry)
        self._queue_bind(exchange, *entry)

    def _queue_bind(self, exchange: Any, routing_key: Any, pattern: Any, queue: Any) -> None:
        """Adds ``queue`` to ``exchange``'s table: read, changed and written whole under an
        exclusive lock (binders one at a time), renamed into place (readers never lock)."""
        table = self._exchange_file(exchange)  # type: ignore[no-untyped-call]  # kombu is untyped
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            self.control_folder.mkdir(exist_ok=True)
            with table.with_name(f"{table.name}.lock").open("a") as guard:
                fcntl.flock(guard.fileno(), fcntl.LOCK_EX)  # released when the file closes
                queues = self.get_table(exchange)  # type: ignore[no-untyped-call]
                if entry in queues:
                    return
                partial = table.with_name(f"{table.name}.{uuid.uuid4()}.part")
                partial.write_bytes(_dumps([entry, *queues]).encode())
                partial.replace(table)
        except OSError as exc:
            raise ChannelError(f"Cannot open {str(table)!r}") from exc


class Transport(filesystem.Transport):
    Channel = Channel
