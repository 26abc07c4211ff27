"""HTTP layer: middlewares and thin views that parse input, call `licensing`, and render."""
