"""Helpers shared by the test suites (on pytest's pythonpath: ``from support.x import y``)."""
