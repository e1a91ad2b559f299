"""Shared test set-up.

Four host CPU devices are simulated for the whole suite, so multi-device tests
(1 vs N devices, sharded steps) run on any machine. The flag has to be set
before JAX is first imported, which is why it lives here.
"""
import os

_FLAG = "--xla_force_host_platform_device_count=4"
if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
