"""The bus: publish records and await a durable ack; consume batches and commit.

Two adapters behind one port: :mod:`shared.bus.embedded` (a durable log in SQLite) and
:mod:`shared.bus.kafka` (Apache Kafka through aiokafka). :func:`shared.bus.factory.open_bus`
picks one from the URL; nothing else in Ciclo knows which runs.
"""

from shared.bus.ports import Bus, ConsumedRecord, Consumer, OutgoingRecord, Publisher, TopicSpec

__all__ = ["Bus", "ConsumedRecord", "Consumer", "OutgoingRecord", "Publisher", "TopicSpec"]
