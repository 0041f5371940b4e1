"""Metrics, speed measurement, comparison reports and SavedModel export."""
