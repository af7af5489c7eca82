"""Cancellation storm and staged cancel for psycopg2 (-> libpq), plain TCP.  See
storm_common.py for the cases and the protocol.

The query is ``SELECT pg_sleep(delay), 'marker'`` in autocommit mode: the server answers
after ``delay`` s with the marker in the row.  Arguments: ``dsn``, plus the storm's (``n``,
``cancels``, ``seconds``, ``max_delay``, ``max_timeout``, ``seed``).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import storm_common  # noqa: E402

import psycopg2  # noqa: E402


class PG(storm_common.Driver):
    errors = (psycopg2.Error,)

    def __init__(self, a):
        self.dsn = a["dsn"]
        self.staged_port = int(a["port"])
        self.max_delay = a.get("max_delay", self.max_delay)
        self.max_timeout = a.get("max_timeout", self.max_timeout)

    def connect(self, staged=False):
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        return conn

    def close(self, conn):
        conn.close()

    def query(self, conn, marker, delay):
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(%s), %s", (delay, marker))
            rows = cur.fetchall()
        return rows[0][1] if len(rows) == 1 else repr(rows)

    def describe(self, conn):
        return {"closed": conn.closed}


if __name__ == "__main__":
    storm_common.main(PG)
