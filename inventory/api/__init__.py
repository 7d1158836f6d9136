"""The booking HTTP API: routes, middlewares and the OpenAPI contract."""
