"""The scaling tests' cluster (tests/opslevel/scaling_support.py), for the chart Role's scaling
tests."""

from tests.opslevel.scaling_support import api

__all__ = ["api"]
