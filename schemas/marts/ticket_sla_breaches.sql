-- SLA breaches: tickets whose first-response deadline passed on day dt without a response, as the
-- factory knew them at the end of delivery day dt (ticket_state of dt). Its deadline is created_at plus
-- the SLA of its priority (urgent 1 h, high 4 h, normal 24 h, low 72 h); a response is any event of the
-- ticket other than `created`. minutes_late: elapsed minutes (from microseconds, rounded to 3 places) to
-- the response, or to the end of dt.
-- grain: dt
-- upstream: ticket_state
-- check: error unique(dt, ticket_id)
-- check: error not_null(ticket_id, priority, channel, deadline, minutes_late)
-- assert: error a_timely_response_is_no_breach: SELECT * FROM this WHERE first_response_at <= deadline
WITH due AS (
    SELECT ticket_id, priority, channel, created_at, first_response_at,
           created_at + CASE priority WHEN 'urgent' THEN INTERVAL 1 HOUR WHEN 'high' THEN INTERVAL 4 HOUR
                                      WHEN 'normal' THEN INTERVAL 24 HOUR ELSE INTERVAL 72 HOUR END AS deadline
    FROM ticket_state
)
SELECT $dt::DATE AS dt, ticket_id, priority, channel, created_at, deadline, first_response_at,
       round((epoch_us(coalesce(first_response_at, ($dt::DATE + 1)::TIMESTAMP AT TIME ZONE 'UTC'))
              - epoch_us(deadline)) / 60000000.0, 3) AS minutes_late
FROM due
WHERE CAST(timezone('UTC', deadline) AS DATE) = $dt::DATE
  AND (first_response_at IS NULL OR first_response_at > deadline)
ORDER BY ticket_id
