"""Generated gRPC/protobuf code for proto/edge_node/v1/ (package ``edge_node.v1``).

Never edit these files: change the .proto and run ``python proto/generate.py``.
"""
