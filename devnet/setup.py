"""Deploy the devnet's contracts from the npm artifacts and seed every pool with liquidity.

Every step is a planned transaction mined by ``Miner`` in strict mode: the same code on a fresh anvil
gives the same addresses, transactions and block hashes."""

from __future__ import annotations

from pathlib import Path

from devnet.abi import calldata, constructor_args, create_address, decode_result
from devnet.artifacts import load_bytecodes
from devnet.deployment import (
    FEE_ON_TRANSFER,
    TICK_SPACING,
    TOKENS,
    V2_FEE,
    V2_PAIRS,
    V3_POOLS,
    Deployment,
    Pool,
    Token,
    aligned_range,
    full_range,
    price_x96,
    sort_pair,
    tick_at,
)
from devnet.miner import Miner, Tx
from devnet.rpc import DevnetError, Rpc

MAX_UINT = 2**256 - 1
DEADLINE = 2**40  # far future; a swap with deadline 1 is a planned revert
DEPLOY_GAS = 6_500_000
USER_FUNDS_USD = 50_000_000  # per token per user: plenty for any run
V2_SEED_USD = 2_000_000  # per side of every v2 pair
V3_SEED_USD = 1_000_000  # per side of each v3 pool's full-range position (plus a narrower one)
DTT_SUPPLY = 10**30


def deploy_contracts(rpc: Rpc, miner: Miner, accounts: list[str], cache_dir: Path) -> Deployment:
    code = load_bytecodes(cache_dir)
    deployer, users = accounts[0], accounts[1:]
    plan: list[tuple[str, bytes]] = [("weth", code.weth9)]
    token_specs = [t for t in TOKENS if t[0] not in ("WETH", FEE_ON_TRANSFER)]
    for symbol, name, decimals, _ in token_specs:
        plan.append(
            (symbol, code.token + constructor_args(["string", "string", "uint8"], name, symbol, decimals))
        )
    plan.append((FEE_ON_TRANSFER, code.deflating_erc20 + constructor_args(["uint256"], DTT_SUPPLY)))
    nonce = miner.next_nonce(deployer)
    addresses: dict[str, str] = {}

    def add(name: str, creation: bytes) -> None:
        plan.append((name, creation))

    weth = create_address(deployer, nonce)
    for label in ("uniswap_v2", "sushiswap"):
        factory = create_address(deployer, nonce + len(plan))
        add(f"{label}_factory", code.v2_factory + constructor_args(["address"], deployer))
        add(f"{label}_router02", code.v2_router02 + constructor_args(["address", "address"], factory, weth))
    v3_factory = create_address(deployer, nonce + len(plan))
    add("uniswap_v3_factory", code.v3_factory)
    # No token descriptor: tokenURI is not needed for indexing, and the descriptor needs library linking.
    zero = "0x" + "00" * 20
    add(
        "nonfungible_position_manager",
        code.v3_position_manager
        + constructor_args(["address", "address", "address"], v3_factory, weth, zero),
    )
    add("swap_router", code.v3_swap_router + constructor_args(["address", "address"], v3_factory, weth))
    txs = []
    for offset, (name, creation) in enumerate(plan):
        addresses[name] = create_address(deployer, nonce + offset)
        txs.append(
            Tx(deployer, None, "0x" + creation.hex(), gas=DEPLOY_GAS, expect={"contracts_deployed": 1})
        )
    miner.mine_all(txs)
    for name, address in addresses.items():
        if rpc.call("eth_getCode", address, "latest") in ("0x", ""):
            raise DevnetError(f"deploying {name} left no code at {address}")
    tokens = {}
    for symbol, name, decimals, usd in TOKENS:
        tokens[symbol] = Token(
            addresses["weth" if symbol == "WETH" else symbol],
            symbol,
            name,
            decimals,
            usd,
            symbol == FEE_ON_TRANSFER,
        )
    contracts = {k: v for k, v in addresses.items() if k not in tokens}
    return Deployment(deployer, users, contracts, code.v2_pair_init_code_hash, tokens)


def fund_accounts(miner: Miner, dep: Deployment) -> None:
    """Token balances, WETH and approvals for every account (the deployer seeds the pools)."""
    txs: list[Tx] = []
    everyone = [dep.deployer, *dep.users]
    weth = dep.tokens["WETH"]
    spenders = [
        dep.router("uniswap-v2"),
        dep.router("sushiswap"),
        dep.contracts["nonfungible_position_manager"],
        dep.contracts["swap_router"],
    ]
    for account in everyone:
        scale = 10 if account == dep.deployer else 1
        for token in dep.tokens.values():
            if token.symbol in ("WETH", FEE_ON_TRANSFER):
                continue
            amount = token.raw(USER_FUNDS_USD * scale)
            txs.append(
                Tx(
                    dep.deployer,
                    token.address,
                    calldata("mint(address,uint256)", account, amount),
                    gas=80_000,
                )
            )
        wrap = weth.raw(USER_FUNDS_USD * scale // 10)
        txs.append(
            Tx(
                account,
                weth.address,
                calldata("deposit()"),
                value=wrap,
                gas=60_000,
                expect={"weth_deposits": 1},
            )
        )
        if account != dep.deployer:
            dtt = dep.tokens[FEE_ON_TRANSFER]
            txs.append(
                Tx(
                    dep.deployer,
                    dtt.address,
                    calldata("transfer(address,uint256)", account, DTT_SUPPLY // 20),
                    gas=80_000,
                    expect={"erc20_transfers": 1},
                )
            )
        for token in dep.tokens.values():
            for spender in spenders:
                txs.append(
                    Tx(
                        account,
                        token.address,
                        calldata("approve(address,uint256)", spender, MAX_UINT),
                        gas=60_000,
                    )
                )
    miner.mine_all(txs)


def create_pools(rpc: Rpc, miner: Miner, dep: Deployment) -> None:
    txs: list[Tx] = []
    for label, pairs in V2_PAIRS.items():
        for a, b in pairs:
            t0, t1 = sort_pair(dep.tokens[a], dep.tokens[b])
            data = calldata("createPair(address,address)", t0.address, t1.address)
            txs.append(
                Tx(
                    dep.deployer,
                    dep.factory(label),
                    data,
                    gas=3_000_000,
                    expect={f"pools_created.{label}": 1},
                )
            )
    npm = dep.contracts["nonfungible_position_manager"]
    for a, b, fee in V3_POOLS:
        t0, t1 = sort_pair(dep.tokens[a], dep.tokens[b])
        data = calldata(
            "createAndInitializePoolIfNecessary(address,address,uint24,uint160)",
            t0.address,
            t1.address,
            fee,
            price_x96(t0, t1),
        )
        txs.append(Tx(dep.deployer, npm, data, gas=5_500_000, expect={"pools_created.uniswap-v3": 1}))
    blocks = miner.mine_all(txs)
    created_in = {r["transactionHash"]: b.number for b in blocks for r in b.receipts}
    by_tx = [created_in[r["transactionHash"]] for b in blocks for r in b.receipts]
    calls: list[tuple[str, list[object]]] = []
    specs: list[tuple[str, Token, Token, int]] = []
    for label, pairs in V2_PAIRS.items():
        for a, b in pairs:
            t0, t1 = sort_pair(dep.tokens[a], dep.tokens[b])
            specs.append((label, t0, t1, V2_FEE))
            data = calldata("getPair(address,address)", t0.address, t1.address)
            calls.append(("eth_call", [{"to": dep.factory(label), "data": data}, "latest"]))
    for a, b, fee in V3_POOLS:
        t0, t1 = sort_pair(dep.tokens[a], dep.tokens[b])
        specs.append(("uniswap-v3", t0, t1, fee))
        data = calldata("getPool(address,address,uint24)", t0.address, t1.address, fee)
        calls.append(("eth_call", [{"to": dep.contracts["uniswap_v3_factory"], "data": data}, "latest"]))
    for (label, t0, t1, fee), result, block in zip(specs, rpc.batch(calls), by_tx, strict=True):
        address = decode_result(["address"], result)[0].lower()
        version = 3 if label == "uniswap-v3" else 2
        factory = dep.contracts["uniswap_v3_factory"] if version == 3 else dep.factory(label)
        spacing = TICK_SPACING[fee] if version == 3 else None
        dep.pools.append(
            Pool(address, "uniswap", version, label, factory, t0.address, t1.address, fee, spacing, block)
        )
    check_v2_addresses(dep)


def check_v2_addresses(dep: Deployment) -> None:
    """Router02 finds pairs by CREATE2 with its embedded init-code hash: it must agree with the factory."""
    from eth_utils import keccak

    init_hash = bytes.fromhex(dep.v2_init_code_hash[2:])
    for pool in dep.v2_pools():
        salt = keccak(bytes.fromhex(pool.token0[2:] + pool.token1[2:]))
        predicted = keccak(b"\xff" + bytes.fromhex(pool.factory[2:]) + salt + init_hash)[12:]
        if "0x" + predicted.hex() != pool.address:
            raise DevnetError(f"{pool.label} pair {pool.address} is not where Router02 will look for it")


def seed_liquidity(rpc: Rpc, miner: Miner, dep: Deployment) -> None:
    txs: list[Tx] = []
    for pool in dep.v2_pools():
        t0, t1 = dep.token_at(pool.token0), dep.token_at(pool.token1)
        data = calldata(
            "addLiquidity(address,address,uint256,uint256,uint256,uint256,address,uint256)",
            t0.address,
            t1.address,
            t0.raw(V2_SEED_USD),
            t1.raw(V2_SEED_USD),
            0,
            0,
            dep.deployer,
            DEADLINE,
        )
        txs.append(
            Tx(dep.deployer, dep.router(pool.label), data, gas=400_000, expect={f"mints.{pool.label}": 1})
        )
        for user in dep.users:  # LP tokens go back through the router when liquidity is removed
            approve = calldata("approve(address,uint256)", dep.router(pool.label), MAX_UINT)
            txs.append(Tx(user, pool.address, approve, gas=60_000))
    npm = dep.contracts["nonfungible_position_manager"]
    for pool in dep.v3_pools():
        t0, t1 = dep.token_at(pool.token0), dep.token_at(pool.token1)
        assert pool.tick_spacing is not None
        tick = tick_at(price_x96(t0, t1))
        ranges = [full_range(pool.tick_spacing), aligned_range(tick, pool.tick_spacing, 20, 20)]
        for (low, high), usd in zip(ranges, (V3_SEED_USD, V3_SEED_USD // 2), strict=True):
            txs.append(mint_position(npm, dep.deployer, pool, t0, t1, low, high, usd, usd))
    miner.mine_all(txs)


def mint_position(
    npm: str, owner: str, pool: Pool, t0: Token, t1: Token, low: int, high: int, usd0: float, usd1: float
) -> Tx:
    data = calldata(
        "mint((address,address,uint24,int24,int24,uint256,uint256,uint256,uint256,address,uint256))",
        (t0.address, t1.address, pool.fee, low, high, t0.raw(usd0), t1.raw(usd1), 0, 0, owner, DEADLINE),
    )
    expect = {"mints.uniswap-v3": 1, "positions.minted": 1, "erc721_transfers": 1}
    return Tx(owner, npm, data, gas=800_000, expect=expect)


def set_up(rpc: Rpc, miner: Miner, accounts: list[str], cache_dir: Path) -> Deployment:
    dep = deploy_contracts(rpc, miner, accounts, cache_dir)
    fund_accounts(miner, dep)
    create_pools(rpc, miner, dep)
    seed_liquidity(rpc, miner, dep)
    return dep
