"""rules.gtid: MariaDB GTID positions parse, compare and merge (no servers)."""

from __future__ import annotations

from rules.gtid import covers, format_position, merge, merge_into, parse_position


def test_parse_and_format():
    assert parse_position("0-1-100,1-2-7") == {0: (1, 100), 1: (2, 7)}
    assert parse_position(b"0-1-100") == {0: (1, 100)}
    assert parse_position(" 0-3-5 , junk, 2-1-x") == {0: (3, 5)}  # malformed parts are left out
    assert parse_position("") == {} and parse_position(None) == {}
    assert format_position({1: (2, 7), 0: (1, 100)}) == "0-1-100,1-2-7"


def test_covers_per_domain_by_sequence():
    replica = parse_position("0-1-100,1-2-7")
    assert covers(replica, parse_position("0-1-100"))
    assert covers(replica, parse_position("0-2-99"))  # another server's GTID in the domain: the sequence counts
    assert not covers(replica, parse_position("0-1-101"))
    assert not covers(replica, parse_position("3-1-1"))  # a domain it has not seen
    assert covers(replica, {})  # nothing required


def test_merge_keeps_the_newest_per_domain():
    assert merge(parse_position("0-1-5,1-1-9"), parse_position("0-2-7")) == {0: (2, 7), 1: (1, 9)}
    target = parse_position("0-1-5")
    assert merge_into(target, parse_position("0-1-6").items()) and target == {0: (1, 6)}
    assert not merge_into(target, parse_position("0-1-4").items())
