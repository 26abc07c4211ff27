"""Tests for `run.py import-whmcs`: WHMCS mod_licensing exports become legacy keys of a product."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from license_server.db import imports as import_rows
from license_server.licensing.models import KeyKind, License, Status
from license_server.licensing.service import NotFound
from license_server.licensing.specs import LicenseSpec, ProductSpec
from license_server.licensing.whmcs_export import BadRow, ExportFormatError
from license_server.licensing.whmcs_import import ImportReport, import_export
from tests import store_helpers
from tests.fixtures.whmcs_export import ZERO_DATE, make_rows, write_csv, write_sql_dump

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("csv", "mysqldump", "phpmyadmin")
PRODUCT = ProductSpec(code="mymod", name="My Module", seats=2)
OTHER = ProductSpec(code="other", name="Other Module")
OTHER_KEY = "Owned-other-product-key"
SIGNED_SHAPE = "ABCD-" + "A" * 110
STATUSES = {
    "Active": Status.ACTIVE,
    "Reissued": Status.PENDING,
    "Suspended": Status.SUSPENDED,
    "Expired": Status.EXPIRED,
}
# One raw line / value tuple that is not a row at all, per format.
STRUCTURAL = {
    "csv": ("this,is,not,a,row", "expected 10 columns, found 5"),
    "mysqldump": ("(999999,1,0,'short-row')", "expected 10 columns, found 4"),
    "phpmyadmin": ("(999999,1,0,'short-row')", "expected 10 columns, found 4"),
}


def write_export(path: Path, rows: list, fmt: str) -> Path:
    if fmt == "csv":
        return write_csv(path, rows)
    return write_sql_dump(path, rows, style=fmt)


def line_of(path: Path, marker: str, *, last: bool = False) -> int:
    """Number of the first (or last) line of the file that contains ``marker``."""
    lines = path.read_text(encoding="utf-8").split("\n")
    found = [number for number, line in enumerate(lines, 1) if marker in line]
    assert found, marker
    return found[-1] if last else found[0]


def unix(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def bindings(license: License) -> list[tuple[str, str, str]]:
    return [(b.kind, b.value, b.raw_value) for b in license.bindings]


def expected_bindings(row: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The bindings of a row as make_rows generates it (already normalised, "d,www.d")."""
    if row["status"] == "Reissued":
        return []
    host, directory = row["validdomain"].split(",")[0], row["validdirectory"]
    ips = dict.fromkeys(row["validip"].split(","))
    return [
        ("domain", host, host),
        *(("ip", ip, ip) for ip in ips),
        ("directory", directory, directory),
    ]


class Export:
    """A generated export with ~20 broken rows and some unusual but valid ones."""

    def __init__(self, tmp_path: Path, fmt: str, n: int = 3000) -> None:
        self.rows: list[dict[str, Any]] = make_rows(n, seed=11)
        self.bad: list[tuple[str, str]] = []  # (marker on the bad row's line, reason)
        self.special: dict[str, dict[str, Any]] = {}
        indices = iter(range(40, n, n // 40))

        def breaks(reason: str, **changes: Any) -> None:
            i = next(indices)
            marker = f"/srv/marker-{i}/"  # a valid directory, unique to this row
            self.rows[i].update(status="Active", validdirectory=marker)
            self.rows[i].update(changes)
            self.bad.append((marker, reason))

        def special(name: str, **changes: Any) -> None:
            i = next(indices)
            if not self.rows[i]["validdomain"]:  # generated as Reissued: give it bindings
                self.rows[i].update(
                    validdomain=f"special-{i}.com",
                    validip="203.0.113.7",
                    validdirectory=f"/home/special-{i}",
                )
            self.rows[i].update(changes)
            self.special[name] = self.rows[i]

        breaks(
            "status 'Paused' is not one of Active, Reissued, Suspended, Expired", status="Paused"
        )
        breaks("reissues -1 is negative", reissues="-1")
        breaks("serviceid 'abc' is not an integer", serviceid="abc")
        breaks("id is empty", id="")
        breaks(
            "lastaccess '2020-13-45 10:00:00' is not a YYYY-MM-DD HH:MM:SS date",
            lastaccess="2020-13-45 10:00:00",
        )
        breaks("lastaccess 'yesterday' is not a YYYY-MM-DD HH:MM:SS date", lastaccess="yesterday")
        breaks("license key is empty", licensekey="")
        breaks("license key is 300 characters long, more than 255", licensekey="k" * 300)
        breaks("license key contains control characters", licensekey="ab\x01cd")
        breaks("key looks like a signed key of this server", licensekey=SIGNED_SHAPE)
        breaks("key already belongs to product other", licensekey=OTHER_KEY)
        breaks(
            "validdomain: 'not a host' is not a hostname or IP address "
            "(only letters, digits and hyphens are allowed)",
            validdomain="not a host",
        )
        breaks(
            "validdomain: 'bad..com' is not a hostname or IP address (empty label)",
            validdomain="fine.com,bad..com",
        )
        breaks(
            "validip: '1.2.3' is not a hostname or IP address (malformed IP address)",
            validip="1.2.3",
        )
        breaks(
            "validip: 'example.com' is not a hostname or IP address (malformed IP address)",
            validip="203.0.113.1,example.com",
        )
        breaks(
            "validip: 'fe80::1%eth0' is not a hostname or IP address (zone ids are not allowed)",
            validip="fe80::1%eth0",
        )
        i = next(indices)
        self.rows[i]["validdirectory"] = f"/srv/marker-{i}/\x01"
        self.bad.append(
            (
                f"/srv/marker-{i}/",
                f"validdirectory: The directory '/srv/marker-{i}/\\x01' contains control "
                "characters.",
            )
        )

        special("www_first", status="Active", validdomain="www.www-first.com,www-first.com")
        special("idn", status="Active", validdomain="Bücher.de,www.Bücher.de")
        special(
            "many",
            status="Active",
            validdomain="one-many.com,two-many.net,WWW.one-many.com,three-many.org",
        )
        special("ip", status="Active", validip="::ffff:203.0.113.9,203.0.113.9")
        special("dir", status="Active", validdirectory="/home/dir/public_html/")
        # WHMCS clears bindings on reissue; leftovers are ignored, even unusable ones.
        special("reissued", status="Reissued", validdomain="left-over.com", validip="bad ip")
        special("unbound", status="Active", validdomain="", validip="", validdirectory="")
        special("suspended", status="Suspended", lastaccess="2024-02-29 12:34:56")
        special("never", status="Active", lastaccess=ZERO_DATE)

        # The same key again, twice, further down: both repeats are bad rows.
        first = self.special["www_first"]
        repeats = [{**first, "id": n + k, "validdirectory": f"/srv/repeat-{k}/"} for k in (1, 2)]
        self.rows[2000:2000] = [repeats[0]]
        self.rows[2500:2500] = [repeats[1]]
        marker, reason = STRUCTURAL[fmt]
        self.rows.insert(1500, marker)
        self.path = write_export(tmp_path / f"export.{fmt}", self.rows, fmt)

        first_line = line_of(self.path, "www.www-first.com")
        for k in (1, 2):
            self.bad.append((f"/srv/repeat-{k}/", f"duplicate key (first on line {first_line})"))
        self.bad.append((marker, reason))
        text = self.path.read_text(encoding="utf-8")
        in_file_order = sorted(self.bad, key=lambda bad: text.index(bad[0]))
        self.expected_bad = [(line_of(self.path, m), r) for m, r in in_file_order]

    @property
    def good(self) -> list[dict[str, Any]]:
        bad_markers = {m for m, _ in self.bad}
        return [
            row
            for row in self.rows
            if isinstance(row, dict)
            and not any(m in str(row["validdirectory"]) for m in bad_markers)
        ]

    @property
    def plain(self) -> list[dict[str, Any]]:
        """Good rows as make_rows generated them (not the special ones)."""
        special = {id(row) for row in self.special.values()}
        return [row for row in self.good if id(row) not in special]


@pytest.fixture
async def product(runtime):
    """The import target, plus OTHER_KEY already imported into another product."""
    await runtime.licenses.create_product(OTHER)
    return await runtime.licenses.create_product(PRODUCT)


@pytest.fixture
async def other_key(runtime, product, tmp_path):
    row = {**make_rows(1, seed=99)[0], "licensekey": OTHER_KEY}
    report = await import_export(runtime.licenses, write_csv(tmp_path / "o.csv", [row]), "other")
    assert report == ImportReport(imported=1)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_import_maps_every_row(runtime, product, other_key, tmp_path, fmt):
    export = Export(tmp_path, fmt)
    before = runtime.licenses.now()
    report = await import_export(runtime.licenses, export.path, "mymod")

    assert [(b.line, b.reason) for b in report.bad] == export.expected_bad
    assert len(report.bad) == 20
    assert report.imported == 3000 - 17 == len(export.good)
    assert report.already_present == 0
    assert not report.dry_run

    for row in export.plain:
        license = await runtime.licenses.license_by_key(row["licensekey"])
        assert license.product.code == "mymod"
        assert license.key_kind is KeyKind.LEGACY
        assert license.status is STATUSES[row["status"]]
        assert license.whmcs_service_id == row["serviceid"]
        assert license.reissue_count == row["reissues"]
        assert license.licensee_name == f"WHMCS service #{row['serviceid']}"
        assert license.licensee_email == ""
        assert license.seats == PRODUCT.seats
        assert license.expires_at is None
        last = None if row["lastaccess"] == ZERO_DATE else unix(row["lastaccess"])
        assert license.last_access_at == last
        assert bindings(license) == expected_bindings(row)
        assert not any(b.is_dev for b in license.bindings)
        assert all(b.created_at >= before for b in license.bindings)
        assert all(b.last_seen_at == (last or b.created_at) for b in license.bindings)

    async def imported(name: str) -> License:
        return await runtime.licenses.license_by_key(export.special[name]["licensekey"])

    assert bindings(await imported("www_first"))[0] == ("domain", "www-first.com", "www-first.com")
    assert bindings(await imported("idn"))[0] == ("domain", "xn--bcher-kva.de", "Bücher.de")
    many = await imported("many")
    assert [(b.value, b.raw_value) for b in many.bindings_of("domain")] == [
        ("one-many.com", "one-many.com"),
        ("two-many.net", "two-many.net"),
        ("three-many.org", "three-many.org"),
    ]
    assert many.seats == 3  # more than the product's 2: every bound domain stays usable
    ip = (await imported("ip")).bindings_of("ip")
    assert [(b.value, b.raw_value) for b in ip] == [("203.0.113.9", "::ffff:203.0.113.9")]
    directory = (await imported("dir")).bindings_of("directory")
    assert [(b.value, b.raw_value) for b in directory] == [
        ("/home/dir/public_html", "/home/dir/public_html/")
    ]
    reissued = await imported("reissued")
    assert (reissued.status, reissued.bindings) == (Status.PENDING, ())
    unbound = await imported("unbound")
    assert (unbound.status, unbound.bindings) == (Status.PENDING, ())
    suspended = await imported("suspended")
    assert suspended.status is Status.SUSPENDED
    assert suspended.last_access_at == unix("2024-02-29 12:34:56") == 1709210096
    assert {b.last_seen_at for b in suspended.bindings} == {1709210096}
    never = await imported("never")
    assert never.status is Status.ACTIVE and never.last_access_at is None
    assert all(b.last_seen_at == b.created_at >= before for b in never.bindings)

    # The one that belongs to another product is left as it was.
    assert (await runtime.licenses.license_by_key(OTHER_KEY)).product.code == "other"


async def test_imported_key_is_stored_encrypted_and_found_by_its_hash(runtime, product, tmp_path):
    row = {**make_rows(1)[0], "licensekey": "  Leased-abc123  "}
    await import_export(runtime.licenses, write_csv(tmp_path / "e.csv", [row]), "mymod")
    license = await runtime.licenses.license_by_key("Leased-abc123")
    assert await runtime.licenses.reveal_key(license.id) == "Leased-abc123"


async def test_dry_run_reads_only(runtime, product, other_key, tmp_path):
    export = Export(tmp_path, "csv")
    dry = await import_export(runtime.licenses, export.path, "mymod", dry_run=True)
    assert dry.dry_run
    for row in export.good:
        with pytest.raises(NotFound):
            await runtime.licenses.license_by_key(row["licensekey"])
    real = await import_export(runtime.licenses, export.path, "mymod")
    assert (dry.imported, dry.already_present, dry.bad) == (
        real.imported,
        real.already_present,
        real.bad,
    )
    again = await import_export(runtime.licenses, export.path, "mymod", dry_run=True)
    assert (again.imported, again.already_present, again.bad) == (0, real.imported, real.bad)


async def test_second_run_changes_nothing(runtime, product, other_key, tmp_path):
    export = Export(tmp_path, "mysqldump")
    first = await import_export(runtime.licenses, export.path, "mymod")
    keys = [row["licensekey"] for row in export.good]
    snapshot = [await runtime.licenses.license_by_key(key) for key in keys]

    second = await import_export(runtime.licenses, export.path, "mymod")
    assert second == ImportReport(imported=0, already_present=first.imported, bad=first.bad)
    assert [await runtime.licenses.license_by_key(key) for key in keys] == snapshot


async def test_a_failed_batch_loses_only_itself_and_a_rerun_picks_up(
    runtime, product, tmp_path, monkeypatch
):
    rows = make_rows(1000, seed=5)
    path = write_csv(tmp_path / "big.csv", rows)
    real_insert, calls = import_rows.insert_bindings, []

    async def crash_on_third_batch(conn, batch_rows):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        await real_insert(conn, batch_rows)

    monkeypatch.setattr(import_rows, "insert_bindings", crash_on_third_batch)
    with pytest.raises(OSError, match="disk full"):
        await import_export(runtime.licenses, path, "mymod", batch_size=100)
    await runtime.licenses.license_by_key(rows[199]["licensekey"])
    for row in rows[200:300]:  # the failed batch left nothing behind, not even a license
        with pytest.raises(NotFound):
            await runtime.licenses.license_by_key(row["licensekey"])

    monkeypatch.setattr(import_rows, "insert_bindings", real_insert)
    report = await import_export(runtime.licenses, path, "mymod", batch_size=100)
    assert report == ImportReport(imported=800, already_present=200)
    for row in rows[200:300]:
        license = await runtime.licenses.license_by_key(row["licensekey"])
        assert bindings(license) == expected_bindings(row)


async def test_an_import_goes_through_the_write_path(runtime, product, tmp_path, monkeypatch):
    from license_server.licensing.actors import CLI

    rows = make_rows(30, seed=8)
    path = write_csv(tmp_path / "w.csv", rows)
    heard = []
    runtime.changes.subscribe(heard.append)
    real_insert, calls = import_rows.insert_bindings, []

    async def crash_on_second_batch(conn, batch_rows):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        await real_insert(conn, batch_rows)

    monkeypatch.setattr(import_rows, "insert_bindings", crash_on_second_batch)
    with pytest.raises(OSError, match="disk full"):
        await import_export(runtime.licenses, path, "mymod", batch_size=10, actor=CLI)
    async with runtime.db.read() as conn:
        found = await conn.fetch_all(
            "SELECT license_id, kind FROM license_changes WHERE kind = 'import' ORDER BY seq"
        )
    logged = [(row["license_id"], row["kind"]) for row in found]
    # The first batch: one change per license, announced with the actor; the failed batch
    # logged and announced nothing.
    first_ten = [await runtime.licenses.license_by_key(r["licensekey"]) for r in rows[:10]]
    assert sorted(logged) == sorted((license.id, "import") for license in first_ten)
    assert [(c.license_id, c.kind, c.actor) for c in heard] == [
        (license_id, "import", CLI) for license_id, _ in logged
    ]


async def test_duplicate_keys_within_a_file(runtime, product, tmp_path):
    rows = make_rows(4, seed=3)
    rows[2]["licensekey"] = rows[3]["licensekey"] = rows[0]["licensekey"]
    report = await import_export(runtime.licenses, write_csv(tmp_path / "d.csv", rows), "mymod")
    assert report.imported == 2
    assert report.bad == [
        BadRow(4, "duplicate key (first on line 2)"),
        BadRow(5, "duplicate key (first on line 2)"),
    ]
    license = await runtime.licenses.license_by_key(rows[0]["licensekey"])
    assert license.whmcs_service_id == rows[0]["serviceid"]  # the first row wins


async def test_a_broken_row_does_not_claim_its_key(runtime, product, tmp_path):
    rows = make_rows(3, seed=6)
    rows[0].update(status="Active", validip="1.2.3")
    rows[1].update(licensekey=rows[0]["licensekey"], status="Paused")
    rows[2].update(licensekey=rows[0]["licensekey"])
    report = await import_export(runtime.licenses, write_csv(tmp_path / "b.csv", rows), "mymod")
    assert [bad.line for bad in report.bad] == [2, 3]
    assert report.imported == 1
    license = await runtime.licenses.license_by_key(rows[0]["licensekey"])
    assert license.whmcs_service_id == rows[2]["serviceid"]


async def test_key_of_another_product_is_refused_even_in_a_dry_run(
    runtime, product, other_key, tmp_path
):
    rows = make_rows(2, seed=4)
    rows[1]["licensekey"] = OTHER_KEY
    path = write_sql_dump(tmp_path / "o.sql", rows, style="phpmyadmin")
    expected = [BadRow(line_of(path, OTHER_KEY), "key already belongs to product other")]
    for dry_run in (True, False):
        report = await import_export(runtime.licenses, path, "mymod", dry_run=dry_run)
        assert (report.imported, report.bad) == (1, expected)
    assert (await runtime.licenses.license_by_key(OTHER_KEY)).product.code == "other"


async def test_a_signed_key_of_this_server_is_refused(runtime, product, tmp_path):
    issued, key = await runtime.licenses.issue(
        LicenseSpec(product="mymod", licensee="A", email="a@example.org")
    )
    row = {**make_rows(1)[0], "licensekey": key, "status": "Suspended"}
    report = await import_export(runtime.licenses, write_csv(tmp_path / "s.csv", [row]), "mymod")
    assert report.bad == [BadRow(2, "key looks like a signed key of this server")]
    assert await runtime.licenses.license_by_key(key) == issued


async def test_unknown_product_and_non_exports_raise_before_writing(runtime, product, tmp_path):
    path = write_csv(tmp_path / "x.csv", make_rows(3))
    with pytest.raises(NotFound, match="no product with code 'nope'"):
        await import_export(runtime.licenses, path, "nope")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ExportFormatError, match="file is empty"):
        await import_export(runtime.licenses, empty, "mymod")
    dump = tmp_path / "other.sql"
    dump.write_text("INSERT INTO `tblclients` VALUES (1,'a');\n")
    with pytest.raises(ExportFormatError, match="no INSERT INTO mod_licensing"):
        await import_export(runtime.licenses, dump, "mymod")


async def test_progress_reports_bytes_and_rows(runtime, product, tmp_path):
    path = write_csv(tmp_path / "p.csv", make_rows(12000, seed=2))
    calls: list[tuple[int, int, int]] = []
    await import_export(
        runtime.licenses, path, "mymod", dry_run=True, on_progress=lambda *a: calls.append(a)
    )
    size = path.stat().st_size
    assert [rows for _, _, rows in calls] == [5000, 10000, 12000]
    assert all(total == size for _, total, _ in calls)
    assert calls[-1][0] == size


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def run(tmp_path, database_url):
    env = {
        **os.environ,
        "LICENSE_SERVER_DATABASE": str(database_url),
        "LICENSE_SERVER_KEYS_DIR": str(tmp_path / "keys"),
    }

    def run(*args: str, stderr: Any = subprocess.PIPE) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "run.py"), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )

    run("create-product", "--code", "mymod", "--name", "My Module")
    return run


def test_cli_reports_bad_rows_and_exits_1(run, tmp_path):
    rows = make_rows(50, seed=8)
    rows[9]["status"] = "Paused"
    rows[19]["status"] = "Active"
    rows[19]["validdomain"] = "not a host"
    write_csv(tmp_path / "export.csv", rows)

    dry = run("import-whmcs", "export.csv", "--product", "mymod", "--dry-run")
    assert dry.returncode == 1
    assert dry.stdout == "dry run: would import 48, already present 0, skipped 2 bad rows\n"
    bad_lines = [
        "export.csv:11: status 'Paused' is not one of Active, Reissued, Suspended, Expired",
        "export.csv:21: validdomain: 'not a host' is not a hostname or IP address "
        "(only letters, digits and hyphens are allowed)",
    ]
    assert dry.stderr.splitlines() == bad_lines  # no progress bar: stderr is not a terminal

    first = run("import-whmcs", "export.csv", "--product", "mymod")
    assert (first.returncode, first.stderr.splitlines()) == (1, bad_lines)
    assert first.stdout == "imported 48, already present 0, skipped 2 bad rows\n"
    second = run("import-whmcs", "export.csv", "--product", "mymod")
    assert second.stdout == "imported 0, already present 48, skipped 2 bad rows\n"

    shown = run("show", rows[0]["licensekey"])
    assert shown.returncode == 0 and "legacy" in shown.stdout


def test_cli_clean_import_exits_0(run, tmp_path):
    write_sql_dump(tmp_path / "export.sql", make_rows(20, seed=9))
    result = run("import-whmcs", "export.sql", "--product", "mymod")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "imported 20, already present 0, skipped 0 bad rows\n"


def test_cli_shows_at_most_100_bad_rows(run, tmp_path):
    rows = make_rows(150, seed=10)
    for row in rows[:130]:
        row["reissues"] = "-1"
    write_csv(tmp_path / "export.csv", rows)
    result = run("import-whmcs", "export.csv", "--product", "mymod")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 101
    assert lines[0] == "export.csv:2: reissues -1 is negative"
    assert lines[99] == "export.csv:101: reissues -1 is negative"
    assert lines[100] == "... and 30 more"
    assert result.stdout == "imported 20, already present 0, skipped 130 bad rows\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["import-whmcs", "empty.csv", "--product", "mymod"], 2, "empty.csv: file is empty"),
        (
            ["import-whmcs", "export.csv.gz", "--product", "mymod"],
            2,
            "export.csv.gz: file is gzip-compressed; decompress it first",
        ),
        (
            ["import-whmcs", "missing.csv", "--product", "mymod"],
            2,
            "missing.csv: No such file or directory",
        ),
        (["import-whmcs", "export.csv", "--product", "nope"], 1, "no product with code 'nope'"),
        (["import-whmcs", "export.csv"], 2, "required: --product"),
    ],
)
def test_cli_errors_are_one_line(run, tmp_path, args, code, message):
    write_csv(tmp_path / "export.csv", make_rows(3))
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "export.csv.gz").write_bytes(b"\x1f\x8b\x08\x00rest")
    result = run(*args)
    assert result.returncode == code
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_cli_draws_a_progress_bar_on_a_terminal(run, tmp_path):
    write_csv(tmp_path / "export.csv", make_rows(12000, seed=12))
    controller, terminal = pty.openpty()
    try:
        result = run(
            "import-whmcs", "export.csv", "--product", "mymod", "--dry-run", stderr=terminal
        )
        os.close(terminal)
        terminal = -1
        output = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal side is closed and everything was read
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert result.returncode == 0
    assert result.stdout == "dry run: would import 12000, already present 0, skipped 0 bad rows\n"
    text = output.decode()
    assert "\r[" + "#" * 30 + "] 100%  12,000 rows" in text
    assert "  5,000 rows" in text and " 10,000 rows" in text
    assert text.endswith("rows\r\n")  # the terminal turns the final "\n" into "\r\n"


async def test_an_import_batch_is_a_few_statements_not_two_per_license(
    runtime, product, tmp_path, monkeypatch
):
    """A batch (500 licenses by default) is one transaction, which holds the write lock every
    check's attempt waits for: its ids are drawn in one read and its rows written in one
    batch, instead of an id probe and an insert per license."""
    rows = make_rows(600, seed=5)
    statements = store_helpers.CountedStatements(runtime.db, monkeypatch)
    report = await import_export(runtime.licenses, write_csv(tmp_path / "many.csv", rows), "mymod")
    assert report.imported == 600
    # Two batches; each: the import lock, owners, ids, licenses, bindings, change log, audit,
    # webhook subscribers, and what the report and progress read.
    assert statements.count <= 30, statements.by_statement()
    ids = {row["id"] for row in await store_helpers.rows(runtime.db, "licenses")}
    assert len(ids) == 600  # distinct
    checked, broken = await runtime.licenses.audit.verify(runtime.db)
    assert broken is None and checked >= 600  # the batches' audit rows form one chain
    for row in rows[:20]:
        license = await runtime.licenses.license_by_key(row["licensekey"])
        assert license.product.code == "mymod" and license.id in ids
