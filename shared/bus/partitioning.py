"""Kafka's default partitioner for keyed records, for both buses: the embedded log places a key
where a Kafka broker would, and the Kafka adapter picks partitions itself when it builds record
batches. Pure Python, no dependency."""

from __future__ import annotations

import struct
from functools import lru_cache

_WORD = struct.Struct("<I")


@lru_cache(maxsize=65_536)
def partition_for(key: str, partitions: int) -> int:
    """murmur2 of the key bytes, positive, modulo the partition count. Cached because keys repeat
    (one key per customer)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def murmur2(data: bytes) -> int:
    """Murmur2 as in Kafka's Java client (``Utils.murmur2``), unsigned; word by word (aiokafka's
    goes byte by byte and takes about twice as long)."""
    m = 0x5BD1E995
    length = len(data)
    body = length & ~3
    h = 0x9747B28C ^ length
    for (k,) in _WORD.iter_unpack(data[:body]):
        k = (k * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & 3
    if tail:
        if tail == 3:
            h ^= data[body + 2] << 16
        if tail >= 2:
            h ^= data[body + 1] << 8
        h = ((h ^ data[body]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)
