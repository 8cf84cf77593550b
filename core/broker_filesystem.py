"""kombu's filesystem transport (embedded mode's broker) with messages that appear whole.

kombu's own ``_put`` creates the message file under its final name and then writes it; a worker
polling the folder may take the file in between and read it empty or cut, and the JSON error
that follows stops the worker ("Unrecoverable error: JSONDecodeError"). It happened within a
minute of monitor checks being dispatched every second. Here a message is written under a name
the readers skip (``….msg.part``: the queue is what follows the first dot, and readers take
``<queue>.msg`` only) and renamed into place, which POSIX makes atomic within a folder.
"""

from __future__ import annotations

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


class Transport(filesystem.Transport):
    Channel = Channel
