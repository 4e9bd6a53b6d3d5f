-- SLA breaches: tickets whose first-response deadline passed on day dt without a response, as the
-- factory knew them at the end of delivery day dt: every ticket event delivered up to dt, each once, at
-- the version bronze keeps (its earliest delivery's; a conflicting later version does not count).
-- A ticket is at its greatest event by (updated_at, event_id), as in silver. Its deadline is created_at
-- plus the SLA of its priority (urgent 1 h, high 4 h, normal 24 h, low 72 h); a response is any event
-- of the ticket other than `created`. minutes_late runs to the response, or to the end of dt.
-- grain: dt
-- upstream: tickets[all:0]
-- check: error unique(dt, ticket_id)
-- check: error not_null(ticket_id, priority, channel, deadline, minutes_late)
-- assert: error a_timely_response_is_no_breach: SELECT * FROM this WHERE first_response_at <= deadline
WITH events AS (  -- each event once, at the version bronze keeps: its earliest delivery's
    SELECT * FROM tickets QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY _delivery_key) = 1
),
current_state AS (
    SELECT * FROM events
    QUALIFY row_number() OVER (PARTITION BY ticket_id ORDER BY updated_at DESC, event_id DESC) = 1
),
responses AS (
    SELECT ticket_id, min(updated_at) AS first_response_at
    FROM events WHERE event_type <> 'created' GROUP BY ticket_id
),
due AS (
    SELECT t.ticket_id, t.priority, t.channel, t.created_at, r.first_response_at,
           t.created_at + CASE t.priority WHEN 'urgent' THEN INTERVAL 1 HOUR WHEN 'high' THEN INTERVAL 4 HOUR
                                          WHEN 'normal' THEN INTERVAL 24 HOUR ELSE INTERVAL 72 HOUR END AS deadline
    FROM current_state t LEFT JOIN responses r USING (ticket_id)
)
SELECT $dt::DATE AS dt, ticket_id, priority, channel, created_at, deadline, first_response_at,
       round(date_diff('second', deadline,
                       coalesce(first_response_at, ($dt::DATE + 1)::TIMESTAMP AT TIME ZONE 'UTC')) / 60.0, 3)
           AS minutes_late
FROM due
WHERE CAST(timezone('UTC', deadline) AS DATE) = $dt::DATE
  AND (first_response_at IS NULL OR first_response_at > deadline)
ORDER BY ticket_id
