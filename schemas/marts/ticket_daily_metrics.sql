-- Daily ticket metrics by priority and channel, as the factory knew the tickets at the end of delivery
-- day dt (ticket_state of dt: each ticket at its greatest event, grouped by that event's priority and
-- channel):
--   opened      tickets created on dt
--   solved      tickets now solved or closed whose greatest event is on dt
--   backlog     tickets not solved or closed
--   median_first_response_minutes   over tickets opened on dt that had a response (any event but `created`)
--   median_resolution_minutes       over tickets solved on dt: created_at to that greatest event
-- (minutes elapsed, from microseconds; the median rounded to 3 places)
--   sla_breaches  ticket_sla_breaches rows of dt
-- A group with nothing to count is left out.
-- grain: dt
-- upstream: ticket_state
-- upstream: ticket_sla_breaches
-- check: error unique(dt, priority, channel)
-- check: error not_null(priority, channel, opened, solved, backlog, sla_breaches)
-- check: warn row_count_change(0.5)
-- assert: error counts_are_not_negative: SELECT * FROM this WHERE opened < 0 OR solved < 0 OR backlog < 0
WITH flagged AS (
    SELECT t.*,
           CAST(timezone('UTC', t.created_at) AS DATE) = $dt::DATE AS opened_today,
           t.status IN ('solved', 'closed') AND CAST(timezone('UTC', t.updated_at) AS DATE) = $dt::DATE AS solved_today
    FROM ticket_state t
),
breaches AS (
    SELECT priority, channel, count(*) AS sla_breaches FROM ticket_sla_breaches GROUP BY priority, channel
),
metrics AS (
    SELECT priority, channel,
           count(*) FILTER (WHERE opened_today) AS opened,
           count(*) FILTER (WHERE solved_today) AS solved,
           count(*) FILTER (WHERE status NOT IN ('solved', 'closed')) AS backlog,
           round(median((epoch_us(first_response_at) - epoch_us(created_at)) / 60000000.0)
                 FILTER (WHERE opened_today AND first_response_at IS NOT NULL), 3) AS median_first_response_minutes,
           round(median((epoch_us(updated_at) - epoch_us(created_at)) / 60000000.0) FILTER (WHERE solved_today), 3)
               AS median_resolution_minutes
    FROM flagged GROUP BY priority, channel
)
SELECT $dt::DATE AS dt, m.priority, m.channel, m.opened, m.solved, m.backlog,
       m.median_first_response_minutes, m.median_resolution_minutes,
       coalesce(b.sla_breaches, 0) AS sla_breaches
FROM metrics m LEFT JOIN breaches b USING (priority, channel)
WHERE m.opened + m.solved + m.backlog + coalesce(b.sla_breaches, 0) > 0
ORDER BY m.priority, m.channel
