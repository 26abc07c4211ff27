"""Tests for the streaming reader of WHMCS mod_licensing exports (CSV and SQL dumps)."""

from __future__ import annotations

import gzip
import random
from datetime import datetime
from pathlib import Path

import pytest

from license_server.licensing import whmcs_export
from license_server.licensing.whmcs_export import BadRow, ExportFormatError, ExportRow, read_export
from tests.fixtures.whmcs_export import make_rows, write_csv, write_sql_dump

HEADER10 = (
    "id,serviceid,addon_id,licensekey,validdomain,validip,validdirectory,reissues,status,lastaccess"
)
CREATE9 = """CREATE TABLE `mod_licensing` (
  `id` int(10) NOT NULL AUTO_INCREMENT,
  `serviceid` int(10) NOT NULL,
  `licensekey` text NOT NULL,
  `validdomain` text NOT NULL,
  `validip` text NOT NULL,
  `validdirectory` text NOT NULL,
  `reissues` int(1) NOT NULL,
  `status` enum('Active','Reissued','Suspended','Expired') NOT NULL,
  `lastaccess` datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  PRIMARY KEY (`id`)
) ENGINE=MyISAM DEFAULT CHARSET=utf8;
"""
ROW9 = "'2020-01-02 03:04:05'"


def write(tmp_path: Path, content: str | bytes, name: str = "export.txt") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def read(path: Path) -> list[ExportRow | BadRow]:
    return list(read_export(path))


def good(items: list) -> list[ExportRow]:
    return [i for i in items if isinstance(i, ExportRow)]


def bad(items: list) -> list[BadRow]:
    return [i for i in items if isinstance(i, BadRow)]


def as_expected(row: dict, line: int) -> ExportRow:
    """The ExportRow that a fixture row dict should come back as."""

    def split(text: str) -> tuple[str, ...]:
        return tuple(p.strip() for p in text.split(",") if p.strip())

    last = row["lastaccess"]
    return ExportRow(
        line=line,
        whmcs_id=row["id"],
        service_id=row["serviceid"],
        license_key=row["licensekey"],
        valid_domains=split(row["validdomain"]),
        valid_ips=split(row["validip"]),
        valid_directories=split(row["validdirectory"]),
        reissues=row["reissues"],
        status=row["status"],
        last_access=None if last.startswith("0000") else datetime.fromisoformat(last),
    )


# --- CSV -----------------------------------------------------------------------------


def test_csv_with_header_quoted_commas_and_embedded_newlines(tmp_path):
    path = write(
        tmp_path,
        f"{HEADER10}\n"
        '1,10,0,Leased-aaa,"a.com, www.a.com",1.2.3.4,/home/a,0,Active,2020-01-02 03:04:05\n'
        '2,11,0,Leased-bbb,"b.com,\nwww.b.com",,"/home/b\n/sub",1,suspended,0000-00-00 00:00:00\n'
        "3,12,5,Leased-ccc,,,,2,Reissued,\n",
    )
    rows = read(path)
    assert rows == [
        ExportRow(
            2,
            1,
            10,
            "Leased-aaa",
            ("a.com", "www.a.com"),
            ("1.2.3.4",),
            ("/home/a",),
            0,
            "Active",
            datetime(2020, 1, 2, 3, 4, 5),
        ),
        ExportRow(
            3,
            2,
            11,
            "Leased-bbb",
            ("b.com", "www.b.com"),
            (),
            ("/home/b\n/sub",),
            1,
            "Suspended",
            None,
        ),
        ExportRow(6, 3, 12, "Leased-ccc", (), (), (), 2, "Reissued", None),
    ]


def test_csv_semicolon_without_header_nine_columns_excel_style(tmp_path):
    # Excel: UTF-8 BOM, CRLF, every field quoted, ';' because ',' is the decimal mark.
    path = write(
        tmp_path,
        '\ufeff"1";"10";"KEY-1";"a.com,www.a.com";"";"";"0";"Active";"2021-05-06"\r\n'
        '"2";"11";"Schlüssel-2";"";"10.0.0.1, 10.0.0.2";"";"3";"EXPIRED";"NULL"\r\n',
    )
    rows = read(path)
    assert [r.line for r in rows] == [1, 2]
    assert rows[0] == ExportRow(
        1, 1, 10, "KEY-1", ("a.com", "www.a.com"), (), (), 0, "Active", datetime(2021, 5, 6)
    )
    assert rows[1].license_key == "Schlüssel-2"
    assert rows[1].valid_ips == ("10.0.0.1", "10.0.0.2")
    assert (rows[1].status, rows[1].last_access, rows[1].reissues) == ("Expired", None, 3)


def test_csv_semicolon_with_header(tmp_path):
    path = write(
        tmp_path,
        HEADER10.replace(",", ";") + "\n7;70;3;K7;x.com,y.com;;;0;Active;0000-00-00\n",
    )
    (row,) = read(path)
    assert (row.line, row.whmcs_id, row.valid_domains) == (2, 7, ("x.com", "y.com"))


def test_csv_without_header_ten_columns_and_wrong_count(tmp_path):
    path = write(
        tmp_path,
        "1,10,4,K1,a.com,,,0,Active,2020-01-01 00:00:00\n"
        "2,11,K2,b.com,,,0,Active\n"
        "3,12,0,K3,c.com,,,0,Active,2020-01-01\n",
    )
    rows = read(path)
    assert [type(r) for r in rows] == [ExportRow, BadRow, ExportRow]
    assert rows[1] == BadRow(2, "expected 9 or 10 columns, found 8")
    assert rows[2].valid_domains == ("c.com",)


def test_csv_header_matches_columns_by_name_and_ignores_extras(tmp_path):
    path = write(
        tmp_path,
        "LicenseKey,status,id,serviceid,notes,validdomain,validip,validdirectory,reissues,lastaccess\n"
        "K1,Active,5,50,hello,a.com,,,1,2020-01-01 00:00:00\n"
        "K2,Active,6,60,short row\n",
    )
    rows = read(path)
    assert rows[0] == ExportRow(
        2, 5, 50, "K1", ("a.com",), (), (), 1, "Active", datetime(2020, 1, 1)
    )
    assert rows[1] == BadRow(3, "expected 10 columns, found 5")


def test_csv_header_missing_required_column_is_format_error(tmp_path):
    path = write(tmp_path, "id,serviceid,licensekey,validdomain,status\n1,2,K,a.com,Active\n")
    with pytest.raises(ExportFormatError, match="validdirectory, validip"):
        read(path)


def test_csv_null_literal_counts_as_empty(tmp_path):
    path = write(
        tmp_path,
        "1,10,K1,NULL,NULL,NULL,0,Active,NULL\n2,11,NULL,a.com,,,0,Active,NULL\n",
    )
    rows = read(path)
    assert rows[0] == ExportRow(1, 1, 10, "K1", (), (), (), 0, "Active", None)
    assert rows[1] == BadRow(2, "license key is empty")


def test_csv_undecodable_line_is_bad_row_and_reading_continues(tmp_path):
    path = write(
        tmp_path,
        f"{HEADER10}\n".encode()
        + b"1,10,0,K\xe91,a.com,,,0,Active,\n"
        + "2,11,0,Kä2,b.com,,,0,Active,\n".encode(),
    )
    rows = read(path)
    assert rows[0] == BadRow(2, "line 2 is not valid UTF-8")
    assert (rows[1].line, rows[1].license_key) == (3, "Kä2")


def test_csv_stray_quotes_resynchronise_on_the_next_line(tmp_path):
    path = write(
        tmp_path,
        "1,10,K1,a.com,,,0,Active,\n"
        '2,11,K"2,b.com,,,0,Active,\n'  # pairs up with the stray quote on line 4
        "3,12,K3,c.com,,,0,Active,\n"
        '4,13,K"4,d.com,,,0,Active,\n'
        "5,14,K5,e.com,,,0,Active,\n"
        '6,15,K"6,f.com,,,0,Active,\n'  # never closed
        "7,16,K7,g.com,,,0,Active,\n",
    )
    rows = read(path)
    assert [(r.line, type(r).__name__) for r in rows] == [
        (1, "ExportRow"),
        (2, "BadRow"),
        (3, "ExportRow"),
        (4, "BadRow"),
        (5, "ExportRow"),
        (6, "BadRow"),
        (7, "ExportRow"),
    ]
    assert rows[1].reason == "malformed CSV: new-line character seen in unquoted field"
    assert rows[3].reason == "malformed CSV: new-line character seen in unquoted field"
    assert rows[5].reason == "quoted field is never closed"


def test_csv_blank_lines_are_skipped_and_overlong_lines_are_bad(tmp_path, monkeypatch):
    monkeypatch.setattr(whmcs_export, "_MAX_TOKEN", 200)
    path = write(
        tmp_path,
        "1,10,K1,a.com,,,0,Active,\n\n   \n"
        + "2,11,K2,"
        + "x" * 500
        + ",,,0,Active,\n"
        + "3,12,K3,c.com,,,0,Active,\n",
    )
    rows = read(path)
    assert rows == [
        ExportRow(1, 1, 10, "K1", ("a.com",), (), (), 0, "Active", None),
        BadRow(4, "line is longer than 200 bytes"),
        ExportRow(5, 3, 12, "K3", ("c.com",), (), (), 0, "Active", None),
    ]


# --- SQL -----------------------------------------------------------------------------


def test_mysqldump_one_line_insert_with_many_tuples(tmp_path):
    rows = make_rows(120, seed=3)
    path = write_sql_dump(tmp_path / "dump.sql", rows, style="mysqldump", batch=50)
    lines = path.read_text().splitlines()
    insert_lines = [
        n for n, text in enumerate(lines, 1) if text.startswith("INSERT INTO `mod_licensing` ")
    ]
    assert len(insert_lines) == 3 and len(lines[insert_lines[0] - 1]) > 5000
    expected = [as_expected(r, insert_lines[i // 50]) for i, r in enumerate(rows)]
    assert read(path) == expected


def test_phpmyadmin_multi_line_insert_with_column_list(tmp_path):
    rows = make_rows(30, seed=4)
    path = write_sql_dump(tmp_path / "dump.sql", rows, style="phpmyadmin", batch=12)
    lines = path.read_text().splitlines()
    tuple_lines = [n for n, text in enumerate(lines, 1) if text.startswith("(")]
    assert read(path) == [as_expected(r, n) for r, n in zip(rows, tuple_lines, strict=True)]


def test_phpmyadmin_column_list_in_any_order(tmp_path):
    path = write(
        tmp_path,
        "INSERT INTO `mod_licensing` (`status`, `licensekey`, `id`, `serviceid`, `lastaccess`,"
        " `validdirectory`, `validip`, `validdomain`, `reissues`, `addon_id`) VALUES\n"
        "('Active', 'K1', 1, 10, '2022-02-02 10:00:00', '/a', '', 'a.com', 2, 0),\n"
        "('active', 'K2', 2, 11, '0000-00-00 00:00:00', '', '', '', 0, 0);\n",
    )
    assert read(path) == [
        ExportRow(2, 1, 10, "K1", ("a.com",), (), ("/a",), 2, "Active", datetime(2022, 2, 2, 10)),
        ExportRow(3, 2, 11, "K2", (), (), (), 0, "Active", None),
    ]


def test_create_table_column_order_is_used_for_inserts_without_column_list(tmp_path):
    path = write(
        tmp_path,
        "CREATE TABLE IF NOT EXISTS `mod_licensing` (\n"
        "  `id` int(10) NOT NULL AUTO_INCREMENT,\n"
        "  `status` enum('Active','Reissued','Suspended','Expired') NOT NULL,\n"
        "  `licensekey` text NOT NULL COMMENT 'the key, as issued (see docs)',\n"
        "  `serviceid` int(10) NOT NULL,\n"
        "  `validdomain` text NOT NULL, `validip` text NOT NULL, `validdirectory` text NOT NULL,\n"
        "  `reissues` int(1) NOT NULL,\n"
        "  `lastaccess` datetime NOT NULL DEFAULT '0000-00-00 00:00:00',\n"
        "  `addon_id` int(10) NOT NULL DEFAULT '0',\n"
        "  PRIMARY KEY (`id`), KEY `serviceid` (`serviceid`, `addon_id`)\n"
        ");\n"
        "INSERT INTO `mod_licensing` VALUES (1,'Expired','K1',10,'a.com','','',0,NULL,7);\n",
    )
    assert read(path) == [ExportRow(12, 1, 10, "K1", ("a.com",), (), (), 0, "Expired", None)]


def test_sql_without_create_table_uses_default_orders(tmp_path):
    path = write(
        tmp_path,
        f"INSERT INTO mod_licensing VALUES (1,10,'K1','a.com','','',0,'Active',{ROW9}),"
        f"(2,11,3,'K2','b.com','','',0,'Active',{ROW9}),(3,12,'K3');\n",
    )
    rows = read(path)
    assert [r.license_key for r in good(rows)] == ["K1", "K2"]
    assert rows[2] == BadRow(1, "expected 9 or 10 columns, found 3")


def test_sql_string_escapes(tmp_path):
    values = [
        r"'K\'1','C:\\dir','a\nb','x\"y',0",
        r"'K''2','50\%','tab\there','nul\0,sub\Z',0",
        r"""'K"3','\_','','',0""",
        r"""'K4\\','back\\slash','','',0""",
    ]
    tuples = ",".join(f"({i},9,{v},'Active',NULL)" for i, v in enumerate(values, 1))
    path = write(tmp_path, f"INSERT INTO `mod_licensing` VALUES {tuples};\n")
    rows = read(path)
    assert [r.license_key for r in rows] == ["K'1", "K'2", 'K"3', "K4\\"]
    assert rows[0].valid_domains == ("C:\\dir",)
    assert rows[0].valid_ips == ("a\nb",)
    assert rows[0].valid_directories == ('x"y',)
    assert rows[1].valid_domains == ("50\\%",)  # MySQL keeps the backslash before % and _
    assert rows[1].valid_ips == ("tab\there",)
    assert rows[1].valid_directories == ("nul\0", "sub\x1a")
    assert rows[2].valid_domains == ("\\_",)
    assert rows[3].valid_domains == ("back\\slash",)


def test_sql_double_quoted_strings_null_and_quoted_numbers(tmp_path):
    path = write(
        tmp_path,
        "INSERT INTO `mod_licensing` VALUES "
        "('7','8',NULL,\"K7\",NULL,NULL,NULL,'0',\"Suspended\",NULL);\n",
    )
    assert read(path) == [ExportRow(1, 7, 8, "K7", (), (), (), 0, "Suspended", None)]


def test_sql_comments_and_conditional_comments_are_skipped(tmp_path):
    path = write(
        tmp_path,
        "-- MySQL dump 10.13\n"
        "# INSERT INTO mod_licensing VALUES (90,1,'HASH','','','',0,'Active',NULL);\n"
        "/* INSERT INTO mod_licensing VALUES (91,1,'BLOCK','','','',0,'Active',NULL);\n"
        "   spanning lines */\n"
        "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n"
        "/*!40000 ALTER TABLE `mod_licensing` DISABLE KEYS */;\n"
        'SET time_zone = "+00:00"; -- trailing comment\n'
        f"INSERT INTO `mod_licensing` VALUES (1,10,'K1','','','',0,'Active',{ROW9});"
        " /* after */ # also after\n"
        "/*!40000 ALTER TABLE `mod_licensing` ENABLE KEYS */;\n"
        "--\n-- Dumping data\n--\n"
        f"INSERT INTO `mod_licensing` VALUES (2,10,'K2','','','',0,'Active',{ROW9});\n",
    )
    rows = read(path)
    assert [(r.line, r.license_key) for r in rows] == [(8, "K1"), (13, "K2")]


def test_sql_other_tables_and_statements_are_ignored(tmp_path):
    path = write(
        tmp_path,
        "DROP TABLE IF EXISTS `mod_licensinglog`;\n"
        "CREATE TABLE `mod_licensinglog` (`id` int, `domain` text, `message` text);\n"
        "LOCK TABLES `mod_licensinglog` WRITE;\n"
        "INSERT INTO `mod_licensinglog` VALUES (1,'a.com','tricky \\'),(2,\\'x\\');'),"
        "(2,'b.com','semi;colon ''quoted'' \"dq;\"');\n"
        "UNLOCK TABLES;\n"
        "INSERT INTO tblhosting (id, domain) VALUES (5, 'x.com');\n"
        "INSERT INTO `mod_licensing_archive` VALUES (9,9,'OLD','','','',0,'Active',NULL);\n"
        f"INSERT INTO `mod_licensing` VALUES (1,10,'K1','','','',0,'Active',{ROW9});\n",
    )
    assert [(r.line, r.license_key) for r in read(path)] == [(8, "K1")]


@pytest.mark.parametrize(
    "head",
    [
        "REPLACE INTO `mod_licensing`",
        "INSERT IGNORE INTO `mod_licensing`",
        "insert into mod_licensing",
        "INSERT INTO `whmcs`.`mod_licensing`",
        "INSERT INTO whmcs . mod_licensing",
        "INSERT LOW_PRIORITY IGNORE INTO `MOD_LICENSING`",
    ],
)
def test_sql_insert_variants_are_accepted(tmp_path, head):
    path = write(tmp_path, f"{head} VALUES (1,10,'K1','','','',0,'Active',{ROW9});\n")
    assert [r.license_key for r in read(path)] == ["K1"]


def test_sql_broken_tuples_resynchronise(tmp_path):
    path = write(
        tmp_path,
        "INSERT INTO `mod_licensing` VALUES "
        f"(1,10,'K1','','','',0,'Active',{ROW9}),"
        f"(2,10,'K'2','','','',0,'Active',{ROW9}),"  # stray quote
        f"(3,10,'K3','','','',0,'Active',{ROW9}),"
        f"(4,10,'K4','','','',0,'Active',,),"  # empty values
        f"(5,10,'K5','','','',0,'Active',{ROW9});\n"
        "INSERT INTO `mod_licensing` (`id`, `serviceid`, `licensekey`, `validdomain`, `validip`,"
        " `validdirectory`, `reissues`, `status`, `lastaccess`) VALUES\n"
        "(6, 10, 'K6', '', '', '', 0, 'Active', NULL),\n"
        "(7, 10, 'K7 is never closed, '', '', 0, 'Active', NULL),\n"
        "(8, 10, 'K8', '', '', '', 0, 'Active', NULL),\n"
        "(9, 10, 'K9', '', '', '', 0, 'Active', NULL) garbage;\n"
        f"INSERT INTO `mod_licensing` VALUES (10,10,'K10','','','',0,'Active',{ROW9});\n",
    )
    rows = read(path)
    assert [r.license_key for r in good(rows)] == ["K1", "K3", "K5", "K6", "K8", "K9", "K10"]
    assert [(r.line, r.reason) for r in bad(rows)] == [
        (1, "malformed value tuple (unterminated string or stray text)"),
        (1, "malformed value tuple (unterminated string or stray text)"),
        (4, "malformed value tuple (unterminated string or stray text)"),
        (6, "unexpected text after a value tuple"),
    ]


def test_sql_broken_last_tuple_does_not_swallow_next_statement(tmp_path):
    path = write(
        tmp_path,
        "INSERT INTO `mod_licensing` VALUES (1,10,'K1 never closed,'','',0,'Active',NULL);\n"
        f"INSERT INTO `mod_licensing` VALUES (2,10,'K2','','','',0,'Active',{ROW9});\n"
        "INSERT INTO `mod_licensing` VALUES (3,10,'K3 and the file ends",
    )
    rows = read(path)
    assert [type(r) for r in rows] == [BadRow, ExportRow, BadRow]
    assert [r.line for r in rows] == [1, 2, 3]


def test_sql_value_count_and_column_list_problems(tmp_path):
    path = write(
        tmp_path,
        "INSERT INTO mod_licensing VALUES (1,10,'K1','','','',0,'Active');\n"
        "INSERT INTO mod_licensing (id, serviceid, licensekey) VALUES (2,10,'K2');\n"
        "INSERT INTO mod_licensing SET id=3, licensekey='K3';\n"
        "INSERT INTO mod_licensing (`id`, `serviceid`, `licensekey`, `validdomain`, `validip`,"
        " `validdirectory`, `reissues`, `status`, `lastaccess`) VALUES (4,10,'K4','','','',0);\n"
        f"INSERT INTO mod_licensing VALUES (5,10,'K5','','','',0,'Active',{ROW9})"
        " ON DUPLICATE KEY UPDATE status = VALUES(status);\n"
        f"INSERT INTO mod_licensing VALUES (6,10,'K6','','','',0,'Active',{ROW9});\n",
    )
    assert read(path)[:4] == [
        BadRow(1, "expected 9 or 10 columns, found 8"),
        BadRow(
            2,
            "INSERT column list lacks lastaccess, reissues, status, validdirectory, "
            "validdomain, validip; statement skipped",
        ),
        BadRow(3, "INSERT INTO mod_licensing without VALUES is not supported"),
        BadRow(4, "expected 9 columns, found 7"),
    ]
    assert [r.license_key for r in good(read(path))] == ["K5", "K6"]


def test_sql_undecodable_tuple_is_bad_row(tmp_path):
    path = write(
        tmp_path,
        b"INSERT INTO mod_licensing VALUES\n(1,10,'K\xff1','','','',0,'Active',NULL),\n"
        + "(2,10,'Kü2','','','',0,'Active',NULL);\n".encode(),
    )
    assert read(path) == [
        BadRow(2, "row is not valid UTF-8"),
        ExportRow(3, 2, 10, "Kü2", (), (), (), 0, "Active", None),
    ]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_sql_result_does_not_depend_on_buffer_boundaries(tmp_path, monkeypatch, chunk):
    rows: list = make_rows(40, seed=5)
    rows[7] = "(8,1,0,'stray'quote','','','',0,'Active',NULL)"
    rows[20]["licensekey"] = "it's -- not /* a comment */ # really"
    expected = {}
    for style in ("mysqldump", "phpmyadmin"):
        path = write_sql_dump(tmp_path / f"{style}.sql", rows, style=style, batch=15)
        expected[style] = read(path)
        assert len(good(expected[style])) == 39
    monkeypatch.setattr(whmcs_export, "_CHUNK", chunk)
    for style, items in expected.items():
        assert read(tmp_path / f"{style}.sql") == items


def test_one_line_insert_is_streamed_not_loaded_whole(tmp_path, monkeypatch):
    rows = make_rows(3000, seed=6)
    path = write_sql_dump(tmp_path / "dump.sql", rows, style="mysqldump", batch=3000)
    assert max(len(line) for line in path.read_bytes().splitlines()) > 300_000
    # With a token limit far below the statement's length, only per-tuple buffering works.
    monkeypatch.setattr(whmcs_export, "_MAX_TOKEN", 4096)
    monkeypatch.setattr(whmcs_export, "_CHUNK", 1024)
    assert len(good(read(path))) == 3000


# --- every bad-row reason, in both formats ---------------------------------------------

REASONS = [
    ("id", "abc", "id 'abc' is not an integer"),
    ("id", "", "id is empty"),
    ("serviceid", "1.5", "serviceid '1.5' is not an integer"),
    ("reissues", "-1", "reissues -1 is negative"),
    ("reissues", "two", "reissues 'two' is not an integer"),
    ("status", "Paused", "status 'Paused' is not one of Active, Reissued, Suspended, Expired"),
    ("licensekey", "", "license key is empty"),
    ("licensekey", "   ", "license key is empty"),
    ("licensekey", "K" * 256, "license key is 256 characters long, more than 255"),
    ("licensekey", "AB\x01CD", "license key contains control characters"),
    ("licensekey", "AB\tCD", "license key contains control characters"),
    (
        "lastaccess",
        "2020-13-01 00:00:00",
        "lastaccess '2020-13-01 00:00:00' is not a YYYY-MM-DD HH:MM:SS date",
    ),
    ("lastaccess", "yesterday", "lastaccess 'yesterday' is not a YYYY-MM-DD HH:MM:SS date"),
    (
        "lastaccess",
        "2020-01-01T00:00:00",
        "lastaccess '2020-01-01T00:00:00' is not a YYYY-MM-DD HH:MM:SS date",
    ),
]


@pytest.mark.parametrize("fmt", ["csv", "sql"])
@pytest.mark.parametrize(("column", "value", "reason"), REASONS)
def test_every_bad_row_reason_with_line_number(tmp_path, fmt, column, value, reason):
    rows = make_rows(3, seed=1)
    rows[1][column] = value
    if fmt == "csv":
        path = write_csv(tmp_path / "x.csv", rows)
        line = 3
    else:
        path = write_sql_dump(tmp_path / "x.sql", rows, style="phpmyadmin")
        lines = path.read_text().split("\n")
        line = [n for n, text in enumerate(lines, 1) if text.startswith("(")][1]
    items = read(path)
    assert items[1] == BadRow(line, reason)
    assert items[2] == as_expected(rows[2], line + 1)


def test_edge_values_that_are_accepted(tmp_path):
    rows = make_rows(2, seed=2)
    rows[0].update(licensekey="K" * 255, status="EXPIRED", lastaccess="2024-02-29")
    rows[1].update(licensekey="  padded  ", reissues=0, validdomain=" a.com ,, b.com ,")
    items = read(write_csv(tmp_path / "x.csv", rows))
    assert [type(i) for i in items] == [ExportRow, ExportRow]
    assert (items[0].status, items[0].last_access) == ("Expired", datetime(2024, 2, 29))
    assert items[1].license_key == "padded"
    assert items[1].valid_domains == ("a.com", "b.com")


# --- format errors and detection -------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"  \n\r\n\t", "empty"),
        (b"id,licensekey\x00\x01\x02", "binary"),
        (gzip.compress(b"INSERT INTO mod_licensing VALUES (1);"), "gzip"),
        ("id,licensekey".encode("utf-16"), "UTF-16"),
        (HEADER10.encode() + b"\n", "no data rows"),
        (CREATE9.encode(), "no INSERT INTO mod_licensing"),
        (
            b"-- dump\nINSERT INTO `mod_licensinglog` VALUES (1,'x');\n"
            b"/* INSERT INTO mod_licensing VALUES (1,2,'K','','','',0,'Active',NULL); */\n",
            "no INSERT INTO mod_licensing",
        ),
    ],
)
def test_files_that_are_not_exports_raise_format_error(tmp_path, content, message):
    path = write(tmp_path, content, "export.sql")
    with pytest.raises(ExportFormatError, match=message) as info:
        read(path)
    assert str(path) in str(info.value)


def test_format_is_detected_from_content_not_extension(tmp_path):
    sql_text = f"INSERT INTO mod_licensing VALUES (1,2,'K','','','',0,'Active',{ROW9});"
    sql = write(tmp_path, sql_text, "export.csv")
    csv_ = write(tmp_path, "1,2,K,,,,0,Active,\n", "export.sql")
    assert [r.license_key for r in read(sql)] == ["K"]
    assert [r.license_key for r in read(csv_)] == ["K"]


# --- progress and volume --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "mysqldump", "phpmyadmin"])
def test_progress_is_monotonic_and_ends_at_total(tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(whmcs_export, "_PROGRESS_EVERY", 100)
    rows = make_rows(1000, seed=7)
    if fmt == "csv":
        path = write_csv(tmp_path / "x.csv", rows)
    else:
        path = write_sql_dump(tmp_path / "x.sql", rows, style=fmt, batch=100)
    total = path.stat().st_size
    calls: list[tuple[int, int]] = []
    assert len(list(read_export(path, on_progress=lambda *a: calls.append(a)))) == 1000
    assert len(calls) == 11
    assert {t for _, t in calls} == {total}
    done = [d for d, _ in calls]
    assert done == sorted(done) and 0 < done[0] < total and done[-1] == total


def inject_defects(rows: list, raw: list[str]) -> tuple[list, set[int]]:
    """Add raw broken rows and break every 500th row another way; return the bad indices."""
    for n, line in enumerate(raw):
        rows.insert(1000 * (n + 1), line)
    bad_at = {i for i, row in enumerate(rows) if isinstance(row, str)}
    defects = [("status", "Paused"), ("reissues", -1), ("licensekey", ""), ("id", "x")]
    defects.append(("lastaccess", "not a date"))
    for n, index in enumerate(range(250, len(rows), 500)):
        column, value = defects[n % len(defects)]
        rows[index][column] = value
        bad_at.add(index)
    return rows, bad_at


@pytest.mark.parametrize(
    "fmt", ["csv-header-comma", "csv-semicolon-nine-columns", "mysqldump", "phpmyadmin"]
)
def test_large_generated_files(tmp_path, fmt):
    rows = make_rows(5000, seed=11)
    if fmt.startswith("csv"):
        raw = ["1,2,3", '77777,1,"never closed']
    else:
        raw = ["(77777,1,0,'K'X','','','',0,'Active',NULL)", "(77778,1,0,'K',,'')"]
    rows, bad_at = inject_defects(rows, raw)
    first_line = 1
    if fmt == "csv-header-comma":
        path = write_csv(tmp_path / "x.csv", rows)
        first_line = 2
    elif fmt == "csv-semicolon-nine-columns":
        for row in rows:
            if isinstance(row, dict):
                del row["addon_id"]
        path = write_csv(tmp_path / "x.csv", rows, header=False, delimiter=";")
    else:
        path = write_sql_dump(tmp_path / "x.sql", rows, style=fmt)
    items = read(path)
    assert len(items) == 5002
    assert len(bad(items)) == len(bad_at) == 12
    assert [r.whmcs_id for r in good(items)] == [
        row["id"] for i, row in enumerate(rows) if i not in bad_at
    ]
    if fmt.startswith("csv"):
        assert [r.line for r in bad(items)] == sorted(i + first_line for i in bad_at)


@pytest.mark.parametrize("fmt", ["csv", "mysqldump", "phpmyadmin"])
def test_randomly_damaged_files_never_raise_or_hang(tmp_path, monkeypatch, fmt):
    rows = make_rows(60, seed=8)
    if fmt == "csv":
        clean = write_csv(tmp_path / "clean", rows).read_bytes()
    else:
        clean = write_sql_dump(tmp_path / "clean", rows, style=fmt, batch=25).read_bytes()
    junk = [b"'", b'"', b"(", b")", b",", b";", b"\\", b"\n", b"/*", b"--", b"#", b"\xff", b"),("]
    rng = random.Random(fmt)
    for _ in range(60):
        data = bytearray(clean)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(data))
            if rng.random() < 0.6:
                data[at:at] = rng.choice(junk)
            else:
                del data[at : at + rng.randint(1, 12)]
        monkeypatch.setattr(whmcs_export, "_CHUNK", rng.choice([16, 1 << 16]))
        path = write(tmp_path, bytes(data))
        try:
            items = read(path)
        except ExportFormatError:
            continue  # e.g. the table name in every INSERT was damaged
        assert all(isinstance(item, ExportRow | BadRow) for item in items)
        lines = [item.line for item in items]
        assert lines == sorted(lines)
