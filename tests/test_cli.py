"""run.py subcommands, run as an operator would: a real process, real files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(tmp_path, database_url):
    base_env = {
        **os.environ,
        "LICENSE_SERVER_DATABASE": str(database_url),
        "LICENSE_SERVER_KEYS_DIR": str(tmp_path / "keys"),
    }

    def run(
        *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), *args],
            capture_output=True,
            text=True,
            env={**base_env, **(env or {})},
            cwd=tmp_path,
            timeout=60,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    return run


def test_issue_then_show_round_trips(run):
    run("create-product", "--code", "mymod", "--name", "My Module", "--whmcs-secret", "s3")
    issued = run(
        "issue",
        "--product",
        "mymod",
        "--licensee",
        "Smith & Sons",
        "--email",
        "a@example.org",
        "--domain",
        "Example.COM",
        "--domain",
        "*.shop.example.net",
        "--seats",
        "3",
        "--expires",
        "2099-12-31",
    )
    key = issued.stdout.splitlines()[-1]
    assert key.startswith("MYMOD-")
    assert issued.stdout.count(key) == 1  # shown once, alone on the last line
    shown = run("show", key).stdout
    assert "Smith & Sons" in shown
    assert "example.com, *.shop.example.net" in shown
    # The day given, and what it means: the stored end-of-day instant is 2100-01-01 00:00.
    assert "expires          2099-12-31 (valid through that day, UTC)\n" in shown
    assert "2100-01-01" not in shown
    assert issued.stdout.splitlines()[0].endswith(
        "(mymod), expires 2099-12-31 (valid through that day, UTC)"
    )
    assert "pending" in shown
    assert key not in shown


def test_lifecycle_commands(run):
    run("create-product", "--code", "m", "--name", "M")
    key = run("issue", "--product", "m", "--licensee", "A", "--email", "a@example.org").stdout
    key = key.splitlines()[-1]
    assert "pending -> suspended" in run("suspend", key).stdout
    refused = run("suspend", key, check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "run.py suspend: cannot suspend a license that is suspended"
    run("unsuspend", key)
    renewed = run("renew", key, "--expires", "2098-02-28").stdout
    assert renewed.endswith("expires 2098-02-28 (valid through that day, UTC)\n")
    assert "expires          2098-02-28 (valid through that day, UTC)" in run("show", key).stdout
    assert run("renew", key, "--no-expiry").stdout.endswith(", expires never\n")
    assert "expires          never\n" in run("show", key).stdout
    run("revoke", key)
    assert "revoked" in run("show", key).stdout


def test_keys_still_verify_after_rotation(run, tmp_path):
    run("create-product", "--code", "m", "--name", "M")
    key = run("issue", "--product", "m", "--licensee", "A", "--email", "a@example.org").stdout
    key = key.splitlines()[-1]
    rotated = run("rotate-keys").stdout
    assert rotated.startswith("published signing key")
    assert len(list((tmp_path / "keys" / "signing").glob("*.pem"))) == 2
    run("show", key)
    run("rotate-keys", "--activate", rotated.split()[3].rstrip(";"))
    run("show", key)


def test_backup_is_a_usable_copy(run, tmp_path, store):
    run("create-product", "--code", "m", "--name", "M")
    key = run("issue", "--product", "m", "--licensee", "A", "--email", "a@example.org").stdout
    key = key.splitlines()[-1]
    run("backup", str(tmp_path / "copy.db"))
    assert (tmp_path / "copy.db").stat().st_mode & 0o777 == 0o600
    again = run("backup", str(tmp_path / "copy.db"), check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    if store == "postgresql":  # a pg_dump archive: restored in tests/test_cli_ops.py
        assert (tmp_path / "copy.db").read_bytes().startswith(b"PGDMP")
        return
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "show", key],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env={
            **os.environ,
            "LICENSE_SERVER_DATABASE": str(tmp_path / "copy.db"),
            "LICENSE_SERVER_KEYS_DIR": str(tmp_path / "keys"),
        },
    )
    assert result.returncode == 0, result.stderr
    assert "status           pending" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["show", "NOPE-123"], 1, "no license with this key"),
        (["show", "MYMOD-04" + "0" * 112], 1, "signature does not verify"),
        (["issue", "--product", "nope", "--licensee", "A", "--email", "a@b.co"], 1, "no product"),
        (["issue", "--product", "m", "--licensee", "A", "--email", "bad"], 2, "email"),
        (
            ["issue", "--product", "m", "--licensee", "A", "--email", "a@b.co", "--seats", "x"],
            2,
            "invalid int value",
        ),
        (
            [
                "issue",
                "--product",
                "m",
                "--licensee",
                "A",
                "--email",
                "a@b.co",
                "--expires",
                "31/12/2030",
            ],
            2,
            "YYYY-MM-DD",
        ),
        (
            [
                "issue",
                "--product",
                "m",
                "--licensee",
                "A",
                "--email",
                "a@b.co",
                "--expires",
                "2001-01-01",
            ],
            1,
            "past",
        ),
        (
            [
                "issue",
                "--product",
                "m",
                "--licensee",
                "A",
                "--email",
                "a@b.co",
                "--domain",
                "not a host",
            ],
            2,
            "domains",
        ),
        (
            ["issue", "--product", "m", "--licensee", "A", "--email", "a@b.co", "--ip", "1.2.3"],
            2,
            "ips",
        ),
        (
            ["issue", "--product", "m", "--licensee", "  ", "--email", "a@b.co"],
            2,
            "licensee: Value error, must not be empty or only whitespace",
        ),
        (
            ["issue", "--product", "m", "--licensee", "caf\udce9", "--email", "a@b.co"],
            2,
            "licensee: Input should be a valid string",
        ),
        (["create-product", "--code", "n", "--name", " \t "], 2, "name: Value error, must not"),
        (["update-product", "--code", "m", "--name", " "], 2, "name: Value error, must not"),
        (["create-product", "--code", "m", "--name", "Again"], 1, "exists"),
        (["create-product", "--code", "bad code", "--name", "X"], 2, "code"),
        (["create-product", "--code", "x", "--name", "X", "--seats", "0"], 2, "seats"),
        (["frobnicate"], 2, "invalid choice"),
        (["issue"], 2, "required"),
    ],
)
def test_bad_input_gives_one_line_and_non_zero_exit(run, args, code, message):
    run("create-product", "--code", "m", "--name", "M")
    result = run(*args, check=False)
    assert result.returncode == code
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_settings_errors_are_one_line(run, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("port = 'x'\n")
    result = run("--config", str(bad), "show", "K", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"run.py: settings error: setting 'port': Input should be a valid integer, unable to "
        f"parse string as an integer (got 'x' from {bad})"
    ]
    missing = run("--config", str(tmp_path / "none.toml"), check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_unsafe_key_permissions_stop_the_cli(run, tmp_path):
    run("create-product", "--code", "m", "--name", "M")
    os.chmod(tmp_path / "keys" / "data.key", 0o644)
    result = run("show", "x", check=False)
    assert result.returncode == 2
    assert "readable by other users" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_ban_list_and_unban(run):
    assert run("ban", "domain", "WWW.Pirate.NET", "--reason", "chargeback").stdout == (
        "banned domain pirate.net\n"
    )
    run("ban", "ip", "203.0.113.9")
    listed = run("bans").stdout
    assert "pirate.net  (chargeback)" in listed and "203.0.113.9" in listed
    assert run("unban", "domain", "pirate.net").returncode == 0
    again = run("unban", "domain", "pirate.net", check=False)
    assert again.returncode == 1 and again.stderr.strip().endswith("is not banned")
    bad = run("ban", "ip", "not-an-ip", check=False)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1


def test_ban_an_ip_range(run):
    # Ranges are accepted as a license's IP rules accept them, listed, and lifted.
    assert run("ban", "ip", "203.0.113.9/24", "--reason", "abuse").stdout == (
        "banned ip 203.0.113.0/24\n"
    )
    assert run("ban", "ip", "2001:DB8::/32").stdout == "banned ip 2001:db8::/32\n"
    listed = run("bans").stdout.splitlines()
    assert listed == ["ip      203.0.113.0/24  (abuse)", "ip      2001:db8::/32"]
    assert run("unban", "ip", "203.0.113.0/24").stdout == "unbanned ip 203.0.113.0/24\n"
    assert run("bans").stdout.splitlines() == ["ip      2001:db8::/32"]
    for bad in ("10.0.0.0/33", "10.0.0.0/x", "fe80::/10%eth0"):
        result = run("ban", "ip", bad, check=False)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("run.py ban: ") and "Traceback" not in result.stderr
    bad_reason = run("ban", "domain", "x.com", "--reason", os.fsdecode(b"\xff"), check=False)
    assert bad_reason.returncode == 1
    assert bad_reason.stderr.splitlines() == ["run.py ban: reason: must be valid UTF-8 text"]


def test_update_product_changes_whmcs_options(run):
    run("create-product", "--code", "m", "--name", "M")
    run(
        "update-product", "--code", "m", "--whmcs-secret", "new", "--free-trial",
        "--allow-ip-conflict", "--max-reissues", "2", "--seats", "3",
    )  # fmt: skip
    key = run("issue", "--product", "m", "--licensee", "A", "--email", "a@example.org").stdout
    key = key.splitlines()[-1]
    assert "seats            3" in run("show", key).stdout
    run("reissue", key)
    run("reissue", key)
    refused = run("reissue", key, check=False)
    assert refused.returncode == 1 and "reissue limit (2)" in refused.stderr
    run("update-product", "--code", "m", "--unlimited-reissues", "--no-free-trial")
    run("reissue", key)
    nothing = run("update-product", "--code", "m", check=False)
    assert nothing.returncode == 1 and "nothing to change" in nothing.stderr
    unknown = run("update-product", "--code", "zz", "--seats", "2", check=False)
    assert unknown.returncode == 1 and "no product" in unknown.stderr


def test_serve_on_a_busy_port_is_one_line(run):
    # A second server on the same port: the README promises one line, not a traceback.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(
            "serve", check=False, env={"LICENSE_SERVER_HOST": "127.0.0.1",
                                       "LICENSE_SERVER_PORT": str(port)}
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"run.py serve: cannot listen on 127.0.0.1:{port}: "
        "address already in use (another server on this port?)"
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["show"],
        ["suspend"],
        ["unsuspend"],
        ["expire"],
        ["revoke"],
        ["reissue"],
        ["renew", "--expires", "2099-01-01"],
        ["renew", "--no-expiry"],
    ],
)
def test_a_key_that_is_not_utf8_is_one_line(run, args):
    # `run.py show $'\xff\xfe'`: argv carries the bytes as surrogate escapes.
    key = os.fsdecode(b"MYMOD-\xff\xfe")
    result = run(args[0], key, *args[1:], check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"run.py {args[0]}: not a license key (it contains bytes that are not UTF-8)"
    ]


# -- the serving event loop (setting event_loop; issue #16) -----------------------------------


def test_the_default_event_loop_is_uvloop_where_it_is_installed():
    import asyncio

    import uvloop

    from license_server.cli import new_event_loop
    from license_server.settings import Settings

    assert Settings().event_loop == "auto"
    for choice, expected in (("auto", uvloop.Loop), ("uvloop", uvloop.Loop)):
        loop = new_event_loop(choice)
        try:
            assert isinstance(loop, expected), choice
        finally:
            loop.close()
    loop = new_event_loop("asyncio")
    try:
        assert isinstance(loop, asyncio.BaseEventLoop) and not isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(monkeypatch):
    from license_server.cli import CommandError, new_event_loop

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    loop = new_event_loop("auto")
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()
    with pytest.raises(CommandError, match="uvloop is not installed"):
        new_event_loop("uvloop")
