"""What the devnet deploys (tokens, venues, pools) and where it ended up."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

# symbol, name, decimals, reference USD price (sizes trades and initial prices; pools drift from it)
TOKENS: list[tuple[str, str, int, int]] = [
    ("WETH", "Wrapped Ether", 18, 3000),
    ("DAI", "Devnet Dai Stablecoin", 18, 1),
    ("USDC", "Devnet USD Coin", 6, 1),
    ("WBTC", "Devnet Wrapped BTC", 8, 60_000),
    ("GEM", "Devnet Gem", 0, 10),
    ("DTT", "Deflating Test Token", 18, 2),  # v2-periphery's DeflatingERC20: burns 1% of every transfer
]
FEE_ON_TRANSFER = "DTT"
V2_VENUES = ("uniswap-v2", "sushiswap")
V2_PAIRS: dict[str, list[tuple[str, str]]] = {
    "uniswap-v2": [
        ("WETH", "USDC"),
        ("WETH", "DAI"),
        ("WBTC", "WETH"),
        ("DAI", "USDC"),
        ("GEM", "WETH"),
        ("DTT", "WETH"),
    ],
    "sushiswap": [("WETH", "USDC"), ("WBTC", "WETH"), ("DAI", "WETH")],
}
V3_POOLS: list[tuple[str, str, int]] = [
    ("WETH", "USDC", 500),
    ("WETH", "USDC", 3000),
    ("WBTC", "WETH", 3000),
    ("DAI", "USDC", 500),
    ("WBTC", "USDC", 3000),
    ("GEM", "WETH", 10000),
]
TICK_SPACING = {500: 10, 3000: 60, 10000: 200}
MAX_TICK = 887272
V2_FEE = 3000  # 0.3%, in v3's fee units (hundredths of a basis point)


@dataclass(frozen=True)
class Token:
    address: str
    symbol: str
    name: str
    decimals: int
    reference_usd: int
    fee_on_transfer: bool = False

    def raw(self, usd: float | Fraction) -> int:
        """Raw amount worth ``usd`` at the reference price, at least one unit."""
        return max(1, int(Fraction(usd) * 10**self.decimals / self.reference_usd))


@dataclass(frozen=True)
class Pool:
    address: str
    protocol: str
    version: int
    label: str
    factory: str
    token0: str
    token1: str
    fee: int
    tick_spacing: int | None = None
    created_block: int = 0


@dataclass
class Deployment:
    deployer: str
    users: list[str]
    contracts: dict[str, str]
    v2_init_code_hash: str
    tokens: dict[str, Token] = field(default_factory=dict)  # by symbol
    pools: list[Pool] = field(default_factory=list)

    def token_at(self, address: str) -> Token:
        for token in self.tokens.values():
            if token.address == address:
                return token
        raise KeyError(address)

    def router(self, label: str) -> str:
        return self.contracts[f"{label.replace('-', '_')}_router02"]

    def factory(self, label: str) -> str:
        return self.contracts[f"{label.replace('-', '_')}_factory"]

    def v2_pools(self, label: str | None = None) -> list[Pool]:
        return [p for p in self.pools if p.version == 2 and (label is None or p.label == label)]

    def v3_pools(self) -> list[Pool]:
        return [p for p in self.pools if p.version == 3]

    def exchanges(self) -> list[dict[str, Any]]:
        """Venue configuration as an indexer would be given it (factory + label)."""
        venues: list[dict[str, Any]] = [
            {
                "label": label,
                "protocol": "uniswap",
                "version": 2,
                "factory": self.factory(label),
                "router": self.router(label),
                "init_code_hash": self.v2_init_code_hash,
            }
            for label in V2_VENUES
        ]
        venues.append(
            {
                "label": "uniswap-v3",
                "protocol": "uniswap",
                "version": 3,
                "factory": self.contracts["uniswap_v3_factory"],
                "router": self.contracts["swap_router"],
                "position_manager": self.contracts["nonfungible_position_manager"],
            }
        )
        return venues

    def to_json(self) -> dict[str, Any]:
        return {
            "deployer": self.deployer,
            "accounts": self.users,
            "contracts": self.contracts,
            "v2_init_code_hash": self.v2_init_code_hash,
            "exchanges": self.exchanges(),
            "tokens": [asdict(t) for t in self.tokens.values()],
            "pools": [asdict(p) for p in self.pools],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        return cls(
            deployer=data["deployer"],
            users=list(data["accounts"]),
            contracts=dict(data["contracts"]),
            v2_init_code_hash=data["v2_init_code_hash"],
            tokens={t["symbol"]: Token(**t) for t in data["tokens"]},
            pools=[Pool(**p) for p in data["pools"]],
        )


def sort_pair(a: Token, b: Token) -> tuple[Token, Token]:
    return (a, b) if int(a.address, 16) < int(b.address, 16) else (b, a)


def price_x96(token0: Token, token1: Token) -> int:
    """sqrtPriceX96 of a pool at the reference prices: sqrt(raw token1 per raw token0) * 2**96."""
    price = Fraction(token0.reference_usd * 10**token1.decimals, token1.reference_usd * 10**token0.decimals)
    return math.isqrt(price.numerator * 2**192 // price.denominator)


def tick_at(sqrt_price_x96: int) -> int:
    price = (sqrt_price_x96 / 2**96) ** 2
    return math.floor(math.log(price) / math.log(1.0001))


def full_range(tick_spacing: int) -> tuple[int, int]:
    top = MAX_TICK // tick_spacing * tick_spacing
    return -top, top


def aligned_range(tick: int, tick_spacing: int, below: int, above: int) -> tuple[int, int]:
    """Ticks ``below``/``above`` spacings around ``tick``, on the spacing grid and inside the limits."""
    base = tick // tick_spacing * tick_spacing
    low, high = full_range(tick_spacing)
    return max(low, base - below * tick_spacing), min(high, base + above * tick_spacing)


def path_v3(tokens: list[Token], fees: list[int]) -> bytes:
    """SwapRouter path: token, fee (3 bytes), token, ..."""
    out = bytes.fromhex(tokens[0].address[2:])
    for fee, token in zip(fees, tokens[1:], strict=True):
        out += fee.to_bytes(3, "big") + bytes.fromhex(token.address[2:])
    return out
