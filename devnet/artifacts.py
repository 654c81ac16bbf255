"""Contract bytecode for the devnet: the official Uniswap npm artifacts, plus a small ERC-20 with
configurable decimals compiled offline by solc-js (cached by source hash)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from eth_utils import keccak

from devnet.anvil import find_node_modules
from devnet.rpc import DevnetError

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
TOKEN_SOURCE = CONTRACTS_DIR / "DevnetToken.sol"

_ARTIFACTS = {
    "WETH9": "@uniswap/v2-periphery/build/WETH9.json",
    "DeflatingERC20": "@uniswap/v2-periphery/build/DeflatingERC20.json",
    "UniswapV2Factory": "@uniswap/v2-core/build/UniswapV2Factory.json",
    "UniswapV2Pair": "@uniswap/v2-core/build/UniswapV2Pair.json",
    "UniswapV2Router02": "@uniswap/v2-periphery/build/UniswapV2Router02.json",
    "UniswapV3Factory": "@uniswap/v3-core/artifacts/contracts/UniswapV3Factory.sol/UniswapV3Factory.json",
    "NonfungiblePositionManager": (
        "@uniswap/v3-periphery/artifacts/contracts/NonfungiblePositionManager.sol/NonfungiblePositionManager.json"
    ),
    "SwapRouter": "@uniswap/v3-periphery/artifacts/contracts/SwapRouter.sol/SwapRouter.json",
}
# The v2 pair init-code hash deployed on mainnet; Router02 embeds it as a PUSH32 constant for CREATE2.
MAINNET_V2_INIT_CODE_HASH = "96e8ac4277198ff8b6f785478aa9a39f403cb768dd02cbee326c3e7da348845f"


@dataclass(frozen=True)
class Bytecodes:
    weth9: bytes
    deflating_erc20: bytes
    v2_factory: bytes
    v2_router02: bytes
    v2_pair_init_code_hash: str
    v3_factory: bytes
    v3_position_manager: bytes
    v3_swap_router: bytes
    token: bytes


def _artifact_bytecode(node_modules: Path, name: str) -> bytes:
    path = node_modules / _ARTIFACTS[name]
    try:
        artifact = json.loads(path.read_text())
    except OSError:
        raise DevnetError(f"missing npm artifact {path}: run `make` (or `npm ci`)") from None
    code = artifact["bytecode"]
    if isinstance(code, dict):  # some truffle/waffle layouts nest it
        code = code["object"]
    return bytes.fromhex(code.removeprefix("0x"))


def v2_pair_creation_code(factory_code: bytes, pair_code: bytes) -> bytes:
    """The pair creation code the factory actually deploys (embedded in the factory's bytecode)."""
    if pair_code not in factory_code:
        raise DevnetError("UniswapV2Factory bytecode does not embed the npm UniswapV2Pair creation code")
    return pair_code


def consistent_router(router_code: bytes, init_code_hash: bytes) -> bytes:
    """Router02 computes pair addresses with CREATE2 and a hard-coded init-code hash. If the npm router
    does not embed the hash of the npm factory's pair code, patch the constant so the devnet is
    self-consistent (the indexer never relies on it: it discovers pairs from factory events)."""
    if init_code_hash in router_code:
        return router_code
    mainnet = bytes.fromhex(MAINNET_V2_INIT_CODE_HASH)
    if router_code.count(mainnet) != 1:
        raise DevnetError("cannot find the pair init-code hash in UniswapV2Router02's bytecode")
    return router_code.replace(mainnet, init_code_hash)


def load_bytecodes(cache_dir: Path) -> Bytecodes:
    node_modules = find_node_modules()
    factory = _artifact_bytecode(node_modules, "UniswapV2Factory")
    pair = v2_pair_creation_code(factory, _artifact_bytecode(node_modules, "UniswapV2Pair"))
    init_code_hash = keccak(pair)
    return Bytecodes(
        weth9=_artifact_bytecode(node_modules, "WETH9"),
        deflating_erc20=_artifact_bytecode(node_modules, "DeflatingERC20"),
        v2_factory=factory,
        v2_router02=consistent_router(_artifact_bytecode(node_modules, "UniswapV2Router02"), init_code_hash),
        v2_pair_init_code_hash="0x" + init_code_hash.hex(),
        v3_factory=_artifact_bytecode(node_modules, "UniswapV3Factory"),
        v3_position_manager=_artifact_bytecode(node_modules, "NonfungiblePositionManager"),
        v3_swap_router=_artifact_bytecode(node_modules, "SwapRouter"),
        token=compile_token(cache_dir, node_modules),
    )


def source_hash() -> str:
    """Hash of everything that shapes a generated devnet: this package's code and contract sources."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted([*package.glob("*.py"), *CONTRACTS_DIR.glob("*.sol")]):
        if path.name == "cli.py":
            continue
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def compile_token(cache_dir: Path, node_modules: Path | None = None) -> bytes:
    """Creation bytecode of ``DevnetToken.sol``, compiled with solc-js once per source hash."""
    return compile_contract(cache_dir, TOKEN_SOURCE, "DevnetToken", node_modules)


def compile_contract(
    cache_dir: Path, source_path: Path, name: str, node_modules: Path | None = None
) -> bytes:
    """Creation bytecode of contract ``name`` in ``source_path`` (one file, no imports), compiled
    offline with solc-js once per source hash."""
    source = source_path.read_text()
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    cached = cache_dir / f"{name}-{key}.bin"
    if cached.exists():
        return bytes.fromhex(cached.read_text().strip())
    node_modules = node_modules or find_node_modules()
    solcjs = node_modules / ".bin" / "solcjs"
    if not solcjs.exists():
        raise DevnetError("solcjs not found in node_modules/.bin: run `make` (or `npm ci`)")
    request = {
        "language": "Solidity",
        "sources": {source_path.name: {"content": source}},
        "settings": {
            "optimizer": {"enabled": True, "runs": 200},
            "evmVersion": "cancun",
            "outputSelection": {"*": {"*": ["evm.bytecode.object"]}},
        },
    }
    done = subprocess.run(
        [str(solcjs), "--standard-json"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )
    # solc-js prints notices before the JSON document on stdout.
    start = done.stdout.find("{")
    if done.returncode != 0 or start < 0:
        raise DevnetError(f"solcjs failed: {(done.stderr or done.stdout).strip()[:300]}")
    output = json.loads(done.stdout[start:])
    errors = [e["formattedMessage"] for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise DevnetError(f"{source_path.name} does not compile: " + errors[0])
    code = output["contracts"][source_path.name][name]["evm"]["bytecode"]["object"]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(code)
    tmp.replace(cached)
    return bytes.fromhex(code)
