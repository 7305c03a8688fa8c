"""The HTTP routes, one module per concern; ``service.app`` includes them."""
