"""The gRPC transport: the LambdaAction servicer, its interceptor, and proto <-> domain conversion."""
