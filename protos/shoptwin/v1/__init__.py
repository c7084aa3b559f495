"""Generated code of the shoptwin.v1 contracts (``make protos``); do not edit the *_pb2* files."""
