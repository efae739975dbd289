"""The entropy protocol: ``entropy_service.proto`` and its generated Python stubs.

Never edit the ``*_pb2*`` files: regenerate them with ``scripts/regenerate_proto.sh``. The wire
contract every compatible server keeps: byte count in request field 1 (varint), bytes in reply
field 1. ``entropy_service_pb2`` holds the messages (imported by the client and the server);
``entropy_service_pb2_grpc`` the generated stub and servicer base, for anyone writing their own
client or server (it checks that grpcio is at least the version that generated it).
"""
