"""Serving an exported raw-text classifier over TensorFlow Serving's REST API.

layout (TF Serving's `<dir>/<version>/saved_model.pb`) -> model (load, validate,
predict, truncation flags) -> batching (dynamic batches off the event loop) ->
protocol (the REST request and response JSON) -> server (the Starlette app).
"""
