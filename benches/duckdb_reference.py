#!/usr/bin/env python3
"""Reference measurement: DuckDB computing what `downbeat replay` computes
(per-minute stream counts, distinct users and top-10 songs; downbeat also
computes the 10-minute sliding windows and breakdowns, which this query does not) from the same EventSim JSON Lines file, on all cores.

    python3 -m venv /tmp/duck && /tmp/duck/bin/pip install duckdb
    /tmp/duck/bin/python benches/duckdb_reference.py FILE.jsonl

Prints one JSON line: events, seconds, events_per_sec (best of 3 runs).
"""
import json
import sys
import time

import duckdb

QUERY = """
WITH raw AS MATERIALIZED (
    SELECT ts, userId, page, artist, song
    FROM read_json(?, format = 'newline_delimited',
                   columns = {ts: 'BIGINT', userId: 'VARCHAR', page: 'VARCHAR',
                              artist: 'VARCHAR', song: 'VARCHAR'})
),
minutes AS (SELECT (ts // 60000) * 60000 AS start_ms, * FROM raw WHERE page = 'NextSong'),
tumbling AS (
    SELECT start_ms, count(*) AS streams, count(DISTINCT userId) AS users
    FROM minutes GROUP BY start_ms
),
top10 AS (
    SELECT start_ms, artist, song, count(*) AS n FROM minutes GROUP BY start_ms, artist, song
    QUALIFY row_number() OVER (PARTITION BY start_ms ORDER BY n DESC, artist, song) <= 10
)
SELECT (SELECT count(*) FROM tumbling), (SELECT count(*) FROM top10), (SELECT count(*) FROM raw)
"""


def main() -> None:
    path = sys.argv[1]
    con = duckdb.connect()
    best = None
    for _ in range(3):
        started = time.perf_counter()
        tumbling, top, events = con.execute(QUERY, [path]).fetchone()
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    print(json.dumps({"engine": "duckdb " + duckdb.__version__, "events": events,
                      "tumbling_windows": tumbling, "top_rows": top,
                      "seconds": best, "events_per_sec": events / best}))


if __name__ == "__main__":
    main()
