-- Every ticket as the factory knew it at the end of delivery day dt: every ticket event delivered up to
-- dt, each once, at the version bronze keeps (its earliest delivery's; a conflicting later version does
-- not count); the ticket at its greatest event by (updated_at, event_id), as silver has it, plus its
-- first response: the earliest updated_at of its events other than `created`. A daily snapshot fact
-- the other ticket marts read (and analysts: "what did we know about ticket X on day D").
-- grain: dt
-- upstream: tickets[all:0]
-- check: error unique(dt, ticket_id)
-- check: error not_null(ticket_id, status, priority, channel, created_at, updated_at, last_event_id)
WITH events AS (
    SELECT * FROM tickets QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY _delivery_key) = 1
),
current_state AS (
    SELECT * FROM events
    QUALIFY row_number() OVER (PARTITION BY ticket_id ORDER BY updated_at DESC, event_id DESC) = 1
),
responses AS (
    SELECT ticket_id, min(updated_at) AS first_response_at
    FROM events WHERE event_type <> 'created' GROUP BY ticket_id
)
SELECT $dt::DATE AS dt, t.ticket_id, t.status, t.priority, t.channel, t.created_at, t.updated_at,
       t.event_id AS last_event_id, r.first_response_at
FROM current_state t LEFT JOIN responses r USING (ticket_id)
ORDER BY t.ticket_id
