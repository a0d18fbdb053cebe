"""Thin adapters to the world other than Docker: the HTTP probe, sd_notify, the metrics
endpoint, the data dir's file system."""
