"""Helpers the integration tests share (plain functions; fixtures live in conftest.py)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"


def connect(database: str | None = None):
    import MySQLdb

    return MySQLdb.connect(host=os.environ["MYSQL_HOST"], port=int(os.environ["MYSQL_PORT"]),
                           user=os.environ["MYSQL_USER"], password=os.environ["MYSQL_PASSWORD"],
                           database=database or os.environ["MYSQL_DB"], charset="utf8mb4")


def reset_database(name: str) -> None:
    """An empty tracking database of the given name (the user may create databases named *_test)."""
    conn = connect(os.environ["MYSQL_DB"])
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        conn.close()


def query(database: str, sql: str, *params):
    """All rows of one statement, on a connection of its own."""
    conn = connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def seed_with_indices(es, cfg: dict, seed_cfg) -> None:
    """Sample data into the four indices a config names (its messages_index, history_index, ...)."""
    import seed_data

    names = {seed_data.MESSAGES_INDEX: cfg["messages_index"], seed_data.HISTORY_INDEX: cfg["history_index"],
             seed_data.STATUS_INDEX: cfg["status_index"], seed_data.AUDIT_INDEX: cfg["audit_index"]}
    seed_data.load(es, seed_cfg, index_names=names)
