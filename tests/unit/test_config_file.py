"""The configuration file (``core.config_file``): flag > environment > file > default, every setting
reachable from the file, and each mistake one clear error naming the file and the key (never the value)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import cex.exchanges
from core.config_file import load_settings, read_config_file
from core.errors import ConfigError
from core.settings import Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
EXCHANGES = sorted(cex.exchanges.EXCHANGES)
SECRET = "abcdef0123456789abcdef0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DEXNODE_* from the caller's shell, and no ./dexnode.toml picked up by accident."""
    import os

    for name in list(os.environ):
        if name.startswith("DEXNODE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "dexnode.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_precedence_flag_over_environment_over_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "confirmations = 5\nmax_reorg_depth = 7\n[api]\nport = 9000\nhost = '0.0.0.0'\n")
    monkeypatch.setenv("DEXNODE_API_PORT", "9100")
    monkeypatch.setenv("DEXNODE_CONFIRMATIONS", "6")
    s = load_settings(path, confirmations=1)
    assert s.confirmations == 1  # flag over environment and file
    assert s.api_port == 9100  # environment over file
    assert s.max_reorg_depth == 7 and s.api_host == "0.0.0.0"  # file over default
    assert s.rpc_batch_size == Settings.model_fields["rpc_batch_size"].default  # default
    assert s.config == path
    # a command's flags applied later (settings_of -> with_overrides) keep the file's values
    again = s.with_overrides(chain="base")
    assert (again.chain, again.max_reorg_depth, again.api_host) == ("base", 7, "0.0.0.0")


def test_the_default_file_and_dexnode_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().config is None  # no file: nothing read
    write(tmp_path, "chain = 'from-default-file'\n")
    assert load_settings().chain == "from-default-file"  # ./dexnode.toml when present
    other = write(tmp_path, "chain = 'from-env-file'\n", "other.toml")
    monkeypatch.setenv("DEXNODE_CONFIG", str(other))
    assert load_settings().chain == "from-env-file"
    third = write(tmp_path, "chain = 'from-flag-file'\n", "third.toml")
    assert load_settings(third).chain == "from-flag-file"  # --config over DEXNODE_CONFIG


def test_every_section_of_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        f"""
database_url = "postgresql://dex:pw@db.example:5432/dexnode"
data_dir = "/var/lib/dexnode"
log_level = "debug"
[rpc]
http = "https://mainnet.infura.io/v3/{SECRET}"
ws = "wss://mainnet.infura.io/ws/v3/{SECRET}"
batch_size = 50
[api]
keys = ["k1", "k2=60"]
[backfill]
from = 19000000
[uniswap]
v2_factories = ["0x5c69bee701ef814a2b6a3edd4b1652cb9cc5aa6f=uniswap-v2"]
[kafka]
bootstrap_servers = "kafka:9092"
topic_prefix = "eth."
[kafka.librdkafka]
"sasl.mechanism" = "PLAIN"
"enable.ssl.certificate.verification" = false
[plugins]
uniswap_v4_pool_managers = "0x000000000004444c5dc75cb358380d2e3de08a90=uniswap-v4"
[cex]
exchanges = ["binance", "okx"]
symbols = "BTC-USDT,ETH-USDT"
feeds = ["trades", "book", "ticker"]
[cex.okx]
symbols = ["BTC-USDT"]
ws_url = "wss://ws.okx.example/ws/v5/public"
rest_url = "https://www.okx.example"
""",
    )
    monkeypatch.setenv("DEXNODE_KAFKA_CLIENT_ID", "from-env")
    s = load_settings(path, exchanges=EXCHANGES)
    assert s.database_url == "postgresql://dex:pw@db.example:5432/dexnode"
    assert s.data_dir == Path("/var/lib/dexnode") and s.log_level == "DEBUG"
    assert s.rpc_http == f"https://mainnet.infura.io/v3/{SECRET}"
    assert s.rpc_ws == f"wss://mainnet.infura.io/ws/v3/{SECRET}"
    assert s.rpc_batch_size == 50 and s.backfill_from == 19_000_000
    assert s.api_keys is not None and s.api_keys.get_secret_value() == "k1,k2=60"  # a list joined
    assert s.uniswap_v2_factories == "0x5c69bee701ef814a2b6a3edd4b1652cb9cc5aa6f=uniswap-v2"
    assert (s.kafka_bootstrap_servers, s.kafka_topic_prefix) == ("kafka:9092", "eth.")
    # the file's librdkafka settings merge with the environment's, name by name
    assert s.librdkafka == {
        "sasl.mechanism": "PLAIN",
        "enable.ssl.certificate.verification": "false",
        "client.id": "from-env",
    }
    assert (
        s.plugin_setting("uniswap_v4_pool_managers")
        == "0x000000000004444c5dc75cb358380d2e3de08a90=uniswap-v4"
    )
    assert (s.cex_exchanges, s.cex_symbols, s.cex_feeds) == (
        "binance,okx",
        "BTC-USDT,ETH-USDT",
        "trades,book,ticker",
    )
    assert s.plugin_setting("cex_okx_symbols") == "BTC-USDT"
    assert s.plugin_setting("cex_okx_ws_url") == "wss://ws.okx.example/ws/v5/public"
    assert s.plugin_setting("cex_okx_rest_url") == "https://www.okx.example"


def uncommented(text: str) -> str:
    """The example with its commented-out settings (``# key = value``, ``# [table]``) switched on."""
    return re.sub(r"(?m)^# (\[[a-z0-9_.]+\]|\"?[a-z0-9_.]+\"? = .*)$", r"\1", text)


def test_the_shipped_example_is_valid_and_names_every_setting(tmp_path: Path) -> None:
    example = REPO / "dexnode.example.toml"
    text = example.read_text()
    # as shipped: the values it sets are the defaults, so copying it changes nothing
    as_shipped = load_settings(example, exchanges=EXCHANGES)
    assert as_shipped.model_dump(exclude={"config"}) == Settings().model_dump(exclude={"config"})
    # every commented-out line is valid too, and together they set every setting
    switched_on = read_config_file(write(tmp_path, uncommented(text)), exchanges=EXCHANGES)
    missing = set(Settings.model_fields) - set(switched_on.values) - {"config"}
    assert missing == set(), f"dexnode.example.toml does not show {sorted(missing)}"
    assert switched_on.values["plugin_settings"]["cex_binance_symbols"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("confirmatons = 3\n", "unknown key 'confirmatons' (did you mean 'confirmations'?)"),
        ("[rpc]\nhtp = 'http://x'\n", "unknown key 'rpc.htp' (did you mean 'rpc.http'?)"),
        (
            "[cex.binance]\nsymbol = ['BTC-USDT']\n",
            "unknown key 'cex.binance.symbol' (did you mean 'cex.binance.symbols'?)",
        ),
        ("confirmations = 'many'\n", "confirmations: Input should be a valid integer"),
        ("[api]\nport = 70000\n", "api.port: Input should be less than or equal to 65535"),
        ("[rpc]\nws = 'http://node:8545'\n", "rpc.ws: RPC websocket URL must be ws:// or wss://"),
        ("database_url = 'mysql://root@db/x'\n", "database_url: database URL must start with postgresql://"),
        (
            "[cex]\nexchanges = ['binance', 'binanse']\n",
            "cex.exchanges: unknown exchange 'binanse' (did you mean 'binance'?)",
        ),
        (
            "[cex.krakn]\nsymbols = ['BTC-USD']\n",
            "cex.krakn: unknown exchange 'krakn' (did you mean 'kraken'?)",
        ),
        ("[cex.okx]\nws_url = 'https://ws.okx.com'\n", "cex.okx.ws_url: must be a ws:// or wss:// URL"),
        ("confirmations = 3\n[api]\nport = 1\n[api]\n", "not valid TOML"),
        ("chain = 'a'\n[chain]\nx = 1\n", "not valid TOML"),
        (
            "rpc_http = 'http://a:1'\n[rpc]\nhttp = 'http://b:1'\n",
            "'rpc.http' is set twice (also as 'rpc_http')",
        ),
        ("[api]\nkeys = [1.5]\n", "api.keys: a list of strings expected"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path, exchanges=EXCHANGES)
    assert str(err.value).startswith(str(path)), str(err.value)
    assert message in str(err.value)


def test_secrets_are_never_echoed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"[rpc]\nhttp = 'wss://mainnet.infura.io/ws/v3/{SECRET}'\n[api]\nkeys = 5\nport = '{SECRET}'\n",
    )
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    text = str(err.value)
    assert "rpc.http" in text and "api.port" in text
    assert SECRET not in text


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"configuration file .*nowhere\.toml not found"):
        load_settings(tmp_path / "nowhere.toml")


def test_the_environment_mistakes_still_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "confirmations = 3\n")
    monkeypatch.setenv("DEXNODE_API_PORT", "many")
    with pytest.raises(ConfigError, match="DEXNODE_API_PORT / --api-port"):
        load_settings(path)


def test_the_command_line_reads_the_file_it_names_instead_of_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``dexnode`` as a user types it (``cli.main.main``): with --config (before or after the command), a
    broken ./dexnode.toml is not read; without it, it is, and the error names it."""
    from cli.main import main

    write(tmp_path, "confirmatons = 3\n")
    other = write(tmp_path, "[api]\nport = 'eighty'\n", "other.toml")
    for argv in (["--config", str(other), "run"], ["run", f"--config={other}"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        err = capsys.readouterr().err
        assert (exited.value.code, err.strip()) == (
            2,
            f"dexnode: {other}: api.port: Input should be a valid integer,"
            " unable to parse string as an integer",
        )
    with pytest.raises(SystemExit) as exited:
        main(["run"])
    err = capsys.readouterr().err
    assert (exited.value.code, err.strip()) == (
        2,
        "dexnode: dexnode.toml: unknown key 'confirmatons' (did you mean 'confirmations'?)",
    )
