// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// A route through several DEX protocols in one transaction, for the devnet: each hop swaps everything
/// the previous one produced (exact input) on a Uniswap v2 pair, a Uniswap v3 pool, a Uniswap v4 pool of
/// a PoolManager, or a Balancer v2 pool of a Vault; the last hop's output goes to the recipient. Native
/// ETH is address(0) (Uniswap v4's currency 0). No real router covers all four (Universal Router has no
/// Balancer and needs Permit2, whose bytecode no npm package ships), so this one is small and plain: it
/// holds nothing between transactions and accepts callbacks only from the pool it is calling.
interface IERC20 {
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
    function approve(address spender, uint256 value) external returns (bool);
}

interface IUniswapV2Pair {
    function getReserves() external view returns (uint112, uint112, uint32);
    function swap(uint256 amount0Out, uint256 amount1Out, address to, bytes calldata data) external;
}

interface IUniswapV3Pool {
    function swap(address recipient, bool zeroForOne, int256 amountSpecified, uint160 sqrtPriceLimitX96, bytes calldata data)
        external
        returns (int256, int256);
}

struct PoolKey {
    address currency0;
    address currency1;
    uint24 fee;
    int24 tickSpacing;
    address hooks;
}

struct SwapParams {
    bool zeroForOne;
    int256 amountSpecified;
    uint160 sqrtPriceLimitX96;
}

interface IPoolManager {
    function unlock(bytes calldata data) external returns (bytes memory);
    function swap(PoolKey memory key, SwapParams memory params, bytes calldata hookData) external returns (int256);
    function sync(address currency) external;
    function settle() external payable returns (uint256);
    function take(address currency, address to, uint256 amount) external;
}

struct SingleSwap {
    bytes32 poolId;
    uint8 kind; // 0: GIVEN_IN
    address assetIn;
    address assetOut;
    uint256 amount;
    bytes userData;
}

struct FundManagement {
    address sender;
    bool fromInternalBalance;
    address recipient;
    bool toInternalBalance;
}

interface IBalancerVault {
    function swap(SingleSwap memory singleSwap, FundManagement memory funds, uint256 limit, uint256 deadline)
        external
        payable
        returns (uint256);
}

contract DevnetRouter {
    uint8 constant UNISWAP_V2 = 0;
    uint8 constant UNISWAP_V3 = 1;
    uint8 constant UNISWAP_V4 = 2;
    uint8 constant BALANCER_V2 = 3;
    uint160 constant MIN_SQRT_PRICE = 4295128739;
    uint160 constant MAX_SQRT_PRICE = 1461446703485210103287273052203988822378723970342;

    /// pool: the v2 pair, v3 pool, v4 PoolManager or Balancer Vault; poolId: Balancer's pool id;
    /// fee, tickSpacing, hooks: the rest of a v4 pool key.
    struct Hop {
        uint8 kind;
        address pool;
        address tokenIn;
        address tokenOut;
        bytes32 poolId;
        uint24 fee;
        int24 tickSpacing;
        address hooks;
    }

    address private calling; // the pool whose callback is expected

    receive() external payable {}

    function swap(Hop[] calldata hops, uint256 amountIn, uint256 minOut, address recipient)
        external
        payable
        returns (uint256 amount)
    {
        if (hops[0].tokenIn == address(0)) {
            require(msg.value == amountIn, "VALUE");
        } else {
            require(IERC20(hops[0].tokenIn).transferFrom(msg.sender, address(this), amountIn), "PULL");
        }
        amount = amountIn;
        for (uint256 i = 0; i < hops.length; i++) {
            if (i > 0) require(hops[i].tokenIn == hops[i - 1].tokenOut, "PATH");
            amount = _hop(hops[i], amount);
        }
        require(amount >= minOut, "MIN_OUT");
        address out = hops[hops.length - 1].tokenOut;
        if (out == address(0)) {
            (bool ok,) = recipient.call{value: amount}("");
            require(ok, "ETH_OUT");
        } else {
            require(IERC20(out).transfer(recipient, amount), "PAY");
        }
    }

    function _hop(Hop calldata hop, uint256 amount) private returns (uint256) {
        bool zeroForOne = hop.tokenIn < hop.tokenOut;
        if (hop.kind == UNISWAP_V2) {
            require(IERC20(hop.tokenIn).transfer(hop.pool, amount), "PAY_V2");
            (uint112 r0, uint112 r1,) = IUniswapV2Pair(hop.pool).getReserves();
            (uint256 reserveIn, uint256 reserveOut) = zeroForOne ? (r0, r1) : (r1, r0);
            uint256 inWithFee = amount * 997;
            uint256 out = inWithFee * reserveOut / (reserveIn * 1000 + inWithFee);
            IUniswapV2Pair(hop.pool).swap(zeroForOne ? 0 : out, zeroForOne ? out : 0, address(this), "");
            return out;
        }
        calling = hop.pool;
        uint256 got;
        if (hop.kind == UNISWAP_V3) {
            uint160 limit = zeroForOne ? MIN_SQRT_PRICE + 1 : MAX_SQRT_PRICE - 1;
            (int256 a0, int256 a1) =
                IUniswapV3Pool(hop.pool).swap(address(this), zeroForOne, int256(amount), limit, abi.encode(hop.tokenIn));
            got = uint256(-(zeroForOne ? a1 : a0));
        } else if (hop.kind == UNISWAP_V4) {
            got = abi.decode(IPoolManager(hop.pool).unlock(abi.encode(hop, amount)), (uint256));
        } else {
            require(hop.kind == BALANCER_V2, "KIND");
            require(IERC20(hop.tokenIn).approve(hop.pool, amount), "APPROVE");
            got = IBalancerVault(hop.pool).swap(
                SingleSwap(hop.poolId, 0, hop.tokenIn, hop.tokenOut, amount, ""),
                FundManagement(address(this), false, address(this), false),
                0,
                block.timestamp
            );
        }
        calling = address(0);
        return got;
    }

    function uniswapV3SwapCallback(int256 amount0, int256 amount1, bytes calldata data) external {
        require(msg.sender == calling, "CALLER");
        address tokenIn = abi.decode(data, (address));
        require(IERC20(tokenIn).transfer(msg.sender, uint256(amount0 > 0 ? amount0 : amount1)), "PAY_V3");
    }

    /// The PoolManager's callback: swap exact input, pay what the swap owes, take what it gives.
    function unlockCallback(bytes calldata data) external returns (bytes memory) {
        require(msg.sender == calling, "CALLER");
        (Hop memory hop, uint256 amount) = abi.decode(data, (Hop, uint256));
        IPoolManager manager = IPoolManager(msg.sender);
        bool zeroForOne = hop.tokenIn < hop.tokenOut;
        PoolKey memory key = zeroForOne
            ? PoolKey(hop.tokenIn, hop.tokenOut, hop.fee, hop.tickSpacing, hop.hooks)
            : PoolKey(hop.tokenOut, hop.tokenIn, hop.fee, hop.tickSpacing, hop.hooks);
        uint160 limit = zeroForOne ? MIN_SQRT_PRICE + 1 : MAX_SQRT_PRICE - 1;
        int256 delta = manager.swap(key, SwapParams(zeroForOne, -int256(amount), limit), "");
        // BalanceDelta: amount0 in the upper 128 bits, amount1 in the lower; negative = owed to the pool
        (int128 paid, int128 received) =
            zeroForOne ? (int128(delta >> 128), int128(delta)) : (int128(delta), int128(delta >> 128));
        uint256 owed = uint256(int256(-paid));
        uint256 out = uint256(int256(received));
        if (hop.tokenIn == address(0)) {
            manager.settle{value: owed}();
        } else {
            manager.sync(hop.tokenIn);
            require(IERC20(hop.tokenIn).transfer(address(manager), owed), "PAY_V4");
            manager.settle();
        }
        manager.take(hop.tokenOut, address(this), out);
        return abi.encode(out);
    }
}
