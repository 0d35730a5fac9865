"""Generated protobuf and gRPC code for the agora.v1 wire contract (see proto/agora/v1/).

Everything below node/rpc/agora/ is written by `make proto`; never edit it by hand.
"""
