"""PyTorch data loading over patched shards: global order, packing, mixing, exact resume.

See `bltdata.data.loader` for the design; the public names are re-exported here.
"""
from bltdata.data.loader import DataConfig, PatchedDataset, ResumableLoader
from bltdata.data.mixing import StrideScheduler
from bltdata.data.state import StateError
from bltdata.data.source import ShardMismatchError

__all__ = ["DataConfig", "PatchedDataset", "ResumableLoader", "StrideScheduler", "StateError", "ShardMismatchError"]
