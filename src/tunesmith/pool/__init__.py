"""The models a server serves, loaded on first use within a memory budget (torch-free)."""

from tunesmith.pool.memory import weight_bytes
from tunesmith.pool.pool import Lease, ModelPool, ServedModel

__all__ = ["Lease", "ModelPool", "ServedModel", "weight_bytes"]
