"""The admin gRPC API through server reflection alone, as grpcurl uses it.

  python3 grpc_reflect.py <admin host:port>
      Lists the services the server reflects, resolves streambus.admin.v1.AdminService's
      descriptors from the server (no .proto file here), builds a DescribeClusterRequest from
      them, calls DescribeCluster and ListTopics, and asks grpc.health.v1.Health for the admin
      service's status. Prints one JSON object: {"services": [...], "methods": [...],
      "cluster": DescribeClusterResponse as JSON, "topics": ListTopicsResponse as JSON,
      "health": "SERVING" | ...}. Exit status 0 when every call answered.

The Rust test (integration-tests/tests/it/admin_grpc.rs) starts the broker and checks the
result. Every call is bounded by a deadline.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from google.protobuf import json_format, message_factory  # noqa: E402
from google.protobuf.descriptor_pool import DescriptorPool  # noqa: E402
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: E402
    ProtoReflectionDescriptorDatabase,
)

from common import arm_watchdog  # noqa: E402

CALL_TIMEOUT_S = 20
ADMIN = "streambus.admin.v1.AdminService"
HEALTH = "grpc.health.v1.Health"


def call(channel, pool, service, method, fields):
    descriptor = pool.FindServiceByName(service).FindMethodByName(method)
    request_class = message_factory.GetMessageClass(descriptor.input_type)
    response_class = message_factory.GetMessageClass(descriptor.output_type)
    stub = channel.unary_unary(
        "/%s/%s" % (service, method),
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    response = stub(request_class(**fields), timeout=CALL_TIMEOUT_S)
    return json_format.MessageToDict(response, preserving_proto_field_name=True)


def main():
    arm_watchdog(120)
    with grpc.insecure_channel(sys.argv[1]) as channel:
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        pool = DescriptorPool(database)
        methods = [m.name for m in pool.FindServiceByName(ADMIN).methods]
        cluster = call(channel, pool, ADMIN, "DescribeCluster", {})
        topics = call(channel, pool, ADMIN, "ListTopics", {"include_internal": True})
        health = call(channel, pool, HEALTH, "Check", {"service": ADMIN})
    print(
        json.dumps(
            {
                "services": services,
                "methods": methods,
                "cluster": cluster,
                "topics": topics,
                "health": health.get("status"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
