"""The HTTP server: the app factory, middleware, the evaluation fast path, errors."""
