import os
import re
import threading

from services import ids
from services.ids import new_id


def test_an_id_is_32_lowercase_hex_digits():
    assert re.fullmatch(r"[0-9a-f]{32}", new_id())


def test_ids_do_not_repeat_across_threads():
    seen: list[str] = []

    def take() -> None:
        seen.extend(new_id() for _ in range(2000))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8000
    assert len(set(seen)) == 8000


def test_the_kernel_is_asked_for_randomness_once_per_refill_not_once_per_id(monkeypatch):
    reads: list[int] = []
    urandom = os.urandom

    def counting_urandom(size: int) -> bytes:
        reads.append(size)
        return urandom(size)

    monkeypatch.setattr(ids.os, "urandom", counting_urandom)
    monkeypatch.setattr(ids, "_offset", len(ids._buffer))  # the next id starts a refill
    for _ in range(ids._IDS_PER_REFILL):
        new_id()
    assert reads == [ids.ID_BYTES * ids._IDS_PER_REFILL]
