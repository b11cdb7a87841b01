"""Produce test orders with Confluent's own serializers.

The wire format idemsink reads (magic byte, schema id, Protobuf message
indexes, Avro binary with logical types) is written here by an
implementation nobody on the project wrote: confluent-kafka's Avro and
Protobuf serializers, registering their schemas in the given registry.

    produce.py --bootstrap HOST:PORT --registry URL --topic T --format avro|protobuf

Writes orders 1..5 (order N: amount N.25, qty N, at 2026-03-01T10:00:00.123456Z),
then order 2 again with qty 20, then a tombstone for order 3. Keys are the
JSON {"id": N}, so that idemsink's default json key format reads them.
"""

import argparse
import datetime
import decimal
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

AVRO_SCHEMA = json.dumps({
    "type": "record", "name": "Order", "namespace": "idemsink.test",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "qty", "type": "int"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
})

AT = datetime.datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=datetime.timezone.utc)


def order_message_class():
    """Builds the Order message class at run time, so no protoc is needed."""
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="idemsink/test/order.proto", package="idemsink.test", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"])
    other = fdp.message_type.add(name="Other")  # so that Order's message index is [1]
    other.field.add(name="x", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    m = fdp.message_type.add(name="Order")
    m.field.add(name="id", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    m.field.add(name="amount", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    m.field.add(name="at", number=3, type=F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp",
                label=F.LABEL_OPTIONAL)
    m.field.add(name="qty", number=4, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.Default()
    _ = timestamp_pb2.Timestamp  # loads google/protobuf/timestamp.proto into the pool
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("idemsink.test.Order"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--format", choices=["avro", "protobuf"], required=True)
    args = ap.parse_args()

    sr = SchemaRegistryClient({"url": args.registry})
    if args.format == "avro":
        ser = AvroSerializer(sr, AVRO_SCHEMA)

        def value(n, qty):
            return {"id": n, "amount": decimal.Decimal(f"{n}.25"), "at": AT, "qty": qty, "note": None}
    else:
        Order = order_message_class()
        ser = ProtobufSerializer(Order, sr, {"use.deprecated.format": False})

        def value(n, qty):
            msg = Order(id=n, amount=f"{n}.25", qty=qty)
            msg.at.FromDatetime(AT)
            return msg

    p = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": False,
                  "broker.address.family": "v4"})
    ctx = SerializationContext(args.topic, MessageField.VALUE)
    records = [(n, value(n, n)) for n in range(1, 6)] + [(2, value(2, 20)), (3, None)]
    for n, v in records:
        p.produce(args.topic, key=json.dumps({"id": n}).encode(), partition=0,
                  value=None if v is None else ser(v, ctx))
    left = p.flush(30)
    if left:
        sys.exit(f"{left} records not delivered")
    print(f"produced {len(records)} {args.format} records to {args.topic}")


if __name__ == "__main__":
    main()
