-- N-day retention of a canonical event table, written independently of audience/data/stats.py
-- so the two implementations check each other (tests/analysis/test_retention.py).
--
-- Definition: among users whose first active day d0 has d0 + N <= the log's last day,
-- the share active again on a day in (d0, d0 + N]. Days are UTC calendar days.
--
-- Parameters (DuckDB variables): events = path of events.parquet, window_days = N.
--   duckdb -c "SET VARIABLE events = 'data/sample/events.parquet';
--              SET VARIABLE window_days = 30; .read analysis/retention.sql"
WITH days AS (
    SELECT DISTINCT user_id, CAST(timezone('UTC', event_time) AS DATE) AS day
    FROM read_parquet(getvariable('events'))
),
firsts AS (
    SELECT user_id, min(day) AS first_day FROM days GROUP BY user_id
),
eligible AS (
    SELECT f.user_id, f.first_day
    FROM firsts f
    WHERE f.first_day + getvariable('window_days') <= (SELECT max(day) FROM days)
),
returned AS (
    SELECT DISTINCT e.user_id
    FROM eligible e JOIN days d USING (user_id)
    WHERE d.day > e.first_day AND d.day <= e.first_day + getvariable('window_days')
)
SELECT
    getvariable('window_days') AS window_days,
    (SELECT count(*) FROM eligible) AS eligible_users,
    (SELECT count(*) FROM returned) AS retained_users;
