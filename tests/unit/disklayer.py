"""An admin disk layer as an older rwproxy wrote it, for the migration tests: saved from a config
file by today's store, then every column a later schema version added dropped and its version set
back (the columns come from admin.store's own migration table, so a new version needs no edit here)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from admin.commands import ALL_SECTIONS
from admin.store import _ADDED_COLUMNS, ConfigStore
from admin.validate import ConfigFile, read_config_file


def older_disk_layer(tmp_path: Path, config_text: str, version: int) -> tuple[Path, ConfigFile]:
    """(the disk layer's path, the config file read) with the disk layer at schema `version`."""
    path = tmp_path / "rwproxy.toml"
    path.write_text(config_text)
    cf = read_config_file(path)
    db = tmp_path / "rwproxy.db"
    store = ConfigStore(db)
    store.startup(cf)
    store.save_to_disk(ALL_SECTIONS)
    store.close()
    con = sqlite3.connect(db)
    for v, added in _ADDED_COLUMNS.items():
        if v > version:
            for table, column in added:
                con.execute(f"ALTER TABLE {table} DROP COLUMN {column.split()[0]}")
    con.execute(f"PRAGMA user_version = {version}")
    con.commit()
    con.close()
    return db, cf
