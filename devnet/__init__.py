"""A local chain with real Uniswap v2/v3 activity and reorgs on demand, for tests, the demo and benchmarks.

``Devnet.start(...)`` starts anvil, deploys the official Uniswap contracts from the npm packages and
generates seeded activity; ``dexnode devnet`` is the command line (``devnet.cli``). The singleton DEXes,
Uniswap v4's PoolManager and Balancer v2's Vault, deploy from their own artifacts with seeded activity
on any anvil chain (``devnet.singletons``; the tests use them on a chain of their own). Swaps that cross
protocols in one transaction (v2 -> v3 -> v4 with native ETH, Balancer hops, a Vault batchSwap) are a
step after the seeded history, on the devnet's own tokens (``devnet.routes``, ``dexnode devnet routes``)."""

from devnet.devnet import Devnet, ReorgResult
from devnet.rpc import DevnetError

__all__ = ["Devnet", "DevnetError", "ReorgResult"]
