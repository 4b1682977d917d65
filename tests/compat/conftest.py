"""The scaling tests' cluster and OpsLevel double (tests/opslevel/scaling_support.py), for the
chart Role's scaling tests."""

from tests.opslevel.scaling_support import api, opslevel

__all__ = ["api", "opslevel"]
