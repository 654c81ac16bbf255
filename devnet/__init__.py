"""A local chain with real Uniswap v2/v3 activity and reorgs on demand, for tests, the demo and benchmarks.

``Devnet.start(...)`` starts anvil, deploys the official Uniswap contracts from the npm packages and
generates seeded activity; ``dexnode devnet`` is the command line (``devnet.cli``)."""

from devnet.devnet import Devnet, ReorgResult
from devnet.rpc import DevnetError

__all__ = ["Devnet", "DevnetError", "ReorgResult"]
