"""The gRPC transport: the LambdaAction servicer, the guard around its methods, and proto <-> domain conversion."""
