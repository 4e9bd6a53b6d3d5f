"""dlt's side of bench/vs_dlt.py, run by the Python of dlt's own venv (dlt is no project dependency).

    python dlt_job.py EVENTS.jsonl POSTGRES_URL PIPELINES_DIR events|events+tickets

Reads the JSONL (lines that are not JSON skipped: dlt has no quarantine), merges the events into
PostgreSQL on event_id, and with `events+tickets` also each ticket's newest event (dedup_sort on
updated_at) on ticket_id: the shape of our bronze + silver. Loader file format csv (dlt loads it with
COPY) and no child tables for the tags list: dlt's fastest way to PostgreSQL that we know of.
"""

import sys

import dlt
import orjson

path, url, pipelines_dir, job = sys.argv[1:5]


def events():
    with open(path, "rb") as source:
        for line in source:
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                continue


@dlt.resource(name="events", write_disposition="merge", primary_key="event_id", max_table_nesting=0)
def event_rows():
    yield from events()


@dlt.resource(name="tickets", write_disposition="merge", primary_key="ticket_id", max_table_nesting=0,
              columns={"updated_at": {"dedup_sort": "desc"}})
def ticket_rows():
    yield from events()


pipeline = dlt.pipeline(pipeline_name="bench", destination=dlt.destinations.postgres(url), dataset_name="dlt_bench",
                        pipelines_dir=pipelines_dir)
resources = [event_rows()] if job == "events" else [event_rows(), ticket_rows()]
info = pipeline.run(resources, loader_file_format="csv")
print(info)
