"""An event watcher with a confirmation depth and a persisted cursor.

The cursor is the position (block, log index) of the last event handled, written
atomically after each one, so a restarted listener neither misses nor repeats an
event. Only blocks at least ``confirmations`` deep are read, so a shallow reorg
cannot show an event that later disappears.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from eth_utils.address import to_checksum_address

from cotune.chain.connection import Chain
from cotune.chain.errors import ChainError
from cotune.chain.events import Event, decode_logs, event_topic
from cotune.common.atomic import write_bytes_atomic

END_OF_BLOCK = 2**31
"""A log index past any real one: the cursor value for 'this whole block is done'."""


@dataclass(frozen=True)
class Cursor:
    """The last position handled: every event at or before it is done."""

    block: int
    log_index: int

    def before(self, event: Event) -> bool:
        """Whether ``event`` comes after this cursor (so it is still to handle)."""
        return event.position > (self.block, self.log_index)


class EventWatcher:
    """Yields cotune events from some contracts, in chain order, each exactly once."""

    def __init__(
        self,
        chain: Chain,
        addresses: Sequence[str],
        *,
        cursor_path: Path | None = None,
        confirmations: int = 0,
        start_block: int = 0,
        batch_blocks: int = 2000,
        event_types: Sequence[type[Event]] | None = None,
    ) -> None:
        if confirmations < 0 or batch_blocks < 1:
            raise ValueError("confirmations must be >= 0 and batch_blocks >= 1")
        self.chain = chain
        self.addresses = [to_checksum_address(a) for a in addresses]
        self.confirmations = confirmations
        self.batch_blocks = batch_blocks
        self._cursor_path = cursor_path
        self._topics = ["0x" + event_topic(t).hex() for t in event_types] if event_types else None
        self._cursor = self._load_cursor() or Cursor(start_block - 1, END_OF_BLOCK)

    @property
    def cursor(self) -> Cursor:
        """The last position handled."""
        return self._cursor

    def safe_head(self) -> int:
        """The newest block deep enough to read."""
        return self.chain.block_number() - self.confirmations

    def pending(self) -> tuple[list[Event], int]:
        """Events after the cursor up to the safe head, and the last block scanned.

        Reads at most ``batch_blocks`` blocks and does not move the cursor.
        """
        done = self._cursor.log_index == END_OF_BLOCK
        first = max(self._cursor.block + 1 if done else self._cursor.block, 0)
        last = min(self.safe_head(), first + self.batch_blocks - 1)
        if last < first:
            return [], self._cursor.block
        log_filter: dict[str, object] = {
            "address": self.addresses,
            "fromBlock": first,
            "toBlock": last,
        }
        if self._topics:
            log_filter["topics"] = [self._topics]
        logs = self.chain.w3.eth.get_logs(log_filter)  # type: ignore[arg-type]
        events = sorted(decode_logs(logs), key=lambda e: e.position)
        return [e for e in events if self._cursor.before(e)], last

    def ack(self, event: Event) -> None:
        """Mark ``event`` handled and persist the cursor."""
        self._move(Cursor(event.block_number, event.log_index))

    def poll(self, handler: Callable[[Event], None]) -> int:
        """Handle every pending event (all batches) in order; return how many were handled.

        The cursor moves past each event only after ``handler`` returns, so an exception
        (or a crash) leaves that event to be delivered again next time.
        """
        handled = 0
        while True:
            events, scanned_to = self.pending()
            for event in events:
                handler(event)
                self.ack(event)
                handled += 1
            if scanned_to > self._cursor.block or (
                scanned_to == self._cursor.block and self._cursor.log_index != END_OF_BLOCK
            ):
                self._move(Cursor(scanned_to, END_OF_BLOCK))
            if scanned_to >= self.safe_head():
                return handled

    def run(
        self,
        handler: Callable[[Event], None],
        stop: threading.Event,
        *,
        interval: float = 1.0,
    ) -> None:
        """Poll until ``stop`` is set, sleeping ``interval`` seconds between polls."""
        while not stop.is_set():
            self.poll(handler)
            stop.wait(interval)

    def _move(self, cursor: Cursor) -> None:
        self._cursor = cursor
        if self._cursor_path is not None:
            record = {
                "chain_id": self.chain.chain_id,
                "addresses": self.addresses,
                "block": cursor.block,
                "log_index": cursor.log_index,
            }
            write_bytes_atomic(self._cursor_path, json.dumps(record).encode(), overwrite=True)

    def _load_cursor(self) -> Cursor | None:
        if self._cursor_path is None or not self._cursor_path.exists():
            return None
        try:
            record = json.loads(self._cursor_path.read_text())
            chain_id, addresses = int(record["chain_id"]), list(record["addresses"])
            cursor = Cursor(int(record["block"]), int(record["log_index"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ChainError(f"{self._cursor_path}: unreadable watcher cursor ({exc})") from exc
        if chain_id != self.chain.chain_id or addresses != self.addresses:
            raise ChainError(
                f"{self._cursor_path} is a cursor for chain {chain_id} contracts {addresses}, "
                f"not chain {self.chain.chain_id} contracts {self.addresses}"
            )
        return cursor
