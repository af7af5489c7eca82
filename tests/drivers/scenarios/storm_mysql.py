"""Cancellation storm and staged cancel for mysqlclient (MySQLdb -> libmariadb).  See
storm_common.py for the cases and the protocol.

The query is ``SELECT SLEEP(delay), 'marker'``: the server answers after ``delay`` s with the
marker in the row.  Arguments: ``connect`` (MySQLdb.connect keyword arguments), plus the
storm's (``n``, ``cancels``, ``seconds``, ``max_delay``, ``max_timeout``, ``seed``).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import storm_common  # noqa: E402

import MySQLdb  # noqa: E402


class MySQL(storm_common.Driver):
    errors = (MySQLdb.Error,)

    def __init__(self, a):
        self.kw = a["connect"]
        self.staged_port = self.kw["port"]
        self.max_delay = a.get("max_delay", self.max_delay)
        self.max_timeout = a.get("max_timeout", self.max_timeout)

    def connect(self, staged=False):
        return MySQLdb.connect(**self.kw)

    def close(self, conn):
        conn.close()

    def query(self, conn, marker, delay):
        cur = conn.cursor()
        try:
            cur.execute("SELECT SLEEP(%s), %s", (delay, marker))
            rows = cur.fetchall()
        finally:
            cur.close()
        return rows[0][1] if len(rows) == 1 else repr(rows)


if __name__ == "__main__":
    storm_common.main(MySQL)
