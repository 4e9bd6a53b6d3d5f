"""pull_flow: pull a source's window page by page, land it, ingest the days it touched, move the cursor.

One pull per (dataset, source) at a time (a lock that dies with its holder). The window runs from the
cursor minus the source's lookback to the source's own clock minus its settle interval: a row committed
late with an older cursor value is inside the next pull's lookback, and the event key makes the overlap
free. Each page lands as files and is recorded (tasks/pull_ledger.py) before the next is asked for, so a
pull killed after page k is resumed from page k+1 by the next pull, in the same window. Once every page
has landed, each touched day is ingested by partition_flow, as delivered files are; only then does the
forward cursor move, by compare-and-set, after its event is appended (tasks/cursor.py).

`start`/`end` pull the days' windows again (BACKFILL; REPLAY when the source rewrote them): their events
are recorded and the forward cursor is never moved back.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from flows.backfill import ingest_partition_task
from schemas.datasets import DatasetSpec, get_dataset
from schemas.reason_codes import Action, ActionReason
from schemas.settings import FactorySettings, load_settings
from schemas.sources import HttpSource, Paging, PulledSource, SqlSource
from schemas.summary import PartitionSummary
from tasks import cursor, pull_ledger
from tasks.assets import as_materialization, source_assets, table_assets
from tasks.atomic import write_atomic
from tasks.cursor import CursorValue, Direction
from tasks.database import get_engine, reading
from tasks.errors import InputError
from tasks.http_source import Page, SourceError, fetch_page_task
from tasks.landing import land_page, write_pull_manifests
from tasks.locks import partition_lock
from tasks.manifests import partition_manifests
from tasks.pull_ledger import PullRun, PullStatus
from tasks.report import refresh_delivery_summary
from tasks.sql_source import SqlWindow


class PullSummary(BaseModel):
    dataset: str
    source: str
    kind: str
    direction: str
    run_id: str
    resumed: bool  # this pull finished one that was killed or failed
    window_start: datetime
    window_end: datetime
    source_clock: datetime | None
    pages: int
    records: int  # landed: inside the window
    already_ingested: int  # inside the window, but bronze holds the same text (the lookback's overlap)
    newest_seen: datetime | None  # the newest cursor value the source showed
    cursor_before: str | None
    cursor_after: str | None
    partitions: list[PartitionSummary] = Field(default_factory=list)
    evidence_path: str | None = None


def _pulled(spec: DatasetSpec) -> PulledSource:
    if spec.source is None:
        raise InputError("--dataset", None, "dataset", f"{spec.name} is delivered as files, not pulled "
                         "(`datafactory run` ingests its manifests)")
    return spec.source


def source_url(settings: FactorySettings, spec: DatasetSpec) -> str:
    """The source's URL: FACTORY_SOURCE_URLS' entry for the dataset, else the declaration's."""
    source = _pulled(spec)
    url = settings.source_urls.get(spec.name) or getattr(source, "url", "")
    if not url:
        raise InputError("FACTORY_SOURCE_URLS", None, spec.name, "no URL for this pulled source (declare `url=` "
                         "or set FACTORY_SOURCE_URLS)")
    return url


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def _window_start(settings: FactorySettings, source: PulledSource, before: CursorValue | None,
                  days: tuple[date, date] | None) -> datetime:
    if days is not None:
        return _day_start(days[0])
    if before is None:
        return _day_start(settings.partition_start_date)
    return before.value - source.lookback


def _window_end(source: PulledSource, clock: datetime, days: tuple[date, date] | None) -> datetime:
    """Never past the source's clock minus settle: a later commit may still land before that instant."""
    end = clock - source.settle
    return end if days is None else min(end, _day_start(days[1] + timedelta(days=1)))


class _Pages:
    """A run's pages as (number, token before, records, token after, attempts), from where it stopped."""

    def __init__(self, settings: FactorySettings, spec: DatasetSpec, engine: Engine) -> None:
        self.spec, self.source, self.engine = spec, _pulled(spec), engine
        self.url = source_url(settings, spec)
        self.first: Page | None = None  # HTTP: the first page, asked for before the window is known
        self.sql: SqlWindow | None = None
        self.newest_in_source: datetime | None = None

    def clock(self, window_start: datetime) -> datetime:
        """The source's clock, read with the data: the first page's Date header, or the SQL snapshot's time."""
        if isinstance(self.source, SqlSource):
            self.sql = SqlWindow(self.url, self.source).__enter__()
            self.newest_in_source = self.sql.newest()
            return self.sql.clock()
        assert isinstance(self.source, HttpSource)
        self.first = self._fetch()(self.source, self.url, None, window_start, 1)
        if self.first.clock is None:
            get_run_logger().warning("%s: no Date header; the window ends at our clock minus settle", self.url)
        return self.first.clock or datetime.now(timezone.utc)

    def pages(self, run: PullRun, landed: list[Any]) -> Iterator[tuple[int, str | None, list[Any], str | None, int]]:
        number = len(landed) + 1
        after = landed[-1].token_after if landed else None
        if isinstance(self.source, SqlSource):
            if self.sql is None:  # resumed: a new snapshot, for the rows after the last landed page
                self.sql = SqlWindow(self.url, self.source).__enter__()
                self.newest_in_source = self.sql.newest()
            for rows in self.sql.pages((run.window_start, run.window_end), after):
                yield number, after, rows.records, rows.token_after, 1
                after, number = rows.token_after, number + 1
            return
        assert isinstance(self.source, HttpSource)
        if landed and after is None:
            return  # the last page had landed when the pull stopped
        # A token, a link or a key names the same place after a restart; a position (page 3, offset 200)
        # names other records once the source changed while the pull was down (rows that moved up would
        # fall between the pages): a resumed positional pull reads its window from the first page again.
        # What it landed stays; the overlap is one event each (bronze, in-batch dedup).
        positional = self.source.positional_tokens or self.source.paging in (Paging.PAGE_NUMBER, Paging.OFFSET)
        token = None if positional else after
        previous: list[Any] | None = None
        fetched = 0
        while True:
            if self.first is not None and number == 1:
                page = self.first
            else:
                page = self._fetch()(self.source, self.url, token, run.window_start, number)
            if page.next_token is not None and page.next_token == token:
                raise SourceError(f"{self.url} (page {number}): the next page's token is this page's ({token})")
            if page.records and page.records == previous:
                raise SourceError(f"{self.url} (page {number}): the same records as the page before: does the API "
                                  f"ignore `{self.source.page_param}`?")
            yield number, token, page.records, page.next_token, page.attempts
            if page.next_token is None:
                return
            previous, fetched = page.records, fetched + 1
            if fetched >= self.source.max_pages:
                raise SourceError(f"{self.url}: more than {self.source.max_pages} pages in one pull")
            token, number = page.next_token, number + 1

    def _fetch(self) -> Any:
        """The page task with this source's retries: Prefect retries throttling and server errors only."""
        assert isinstance(self.source, HttpSource)
        return fetch_page_task.with_options(
            retries=self.source.retries, retry_delay_seconds=exponential_backoff(backoff_factor=self.source.backoff_seconds))

    def close(self) -> None:
        if self.sql is not None:
            self.sql.__exit__(None, None, None)
            self.sql = None


@flow(name="pull-flow", log_prints=False)
def pull_flow(dataset: str, start: date | None = None, end: date | None = None, replay: bool = False,
              reason_code: ActionReason = ActionReason.SCHEDULED, operator: str = "datafactory",
              restart: bool = False) -> PullSummary:
    """Pull a dataset's source (HTTP API or SQL table) from its cursor, land the pages, ingest the days
    they touched, then move the cursor forward (compare-and-set, after its event).

    With `start` (and `end`, default `start`), pull those days' windows again instead (a backfill; a
    replay with `replay`, when the source rewrote history): the partitions are re-ingested, the cursor
    event is recorded, the forward cursor stays where it is.

    Args:
        dataset: a pulled dataset (its module declares `source=HttpSource(...)` or `SqlSource(...)`)
        start: first day to pull again (UTC); empty = the forward pull from the cursor
        end: last day to pull again (UTC); empty = start
        replay: the days are pulled again because the source rewrote them (REPLAY, not BACKFILL)
        reason_code: why, for the partitions' ledger and decision log (scheduled, operator_request, ...)
        operator: who asked for it
        restart: give up an unfinished pull that cannot finish (an expired token, a page that always
            fails) instead of resuming it; this pull reads from the cursor (which it never moved)
    """
    settings = load_settings()
    spec = get_dataset(dataset)
    source = _pulled(spec)
    days = None if start is None else (start, end or start)
    if days is not None and days[1] < days[0]:
        raise InputError("--end", None, "end", f"{days[1]} is before --start {days[0]}")
    direction = Direction.FORWARD if days is None else Direction.REPLAY if replay else Direction.BACKFILL
    engine = get_engine(settings.database_url)
    with partition_lock(engine, dataset, f"pull:{source.name}", lambda: "another pull of this source"):
        return _pull(settings, spec, source, engine, direction, days, ActionReason(reason_code), operator, restart)


def _pull(settings: FactorySettings, spec: DatasetSpec, source: PulledSource, engine: Engine, direction: Direction,
          days: tuple[date, date] | None, reason: ActionReason, operator: str, restart: bool = False) -> PullSummary:
    logger = get_run_logger()
    root = settings.manifest_root(spec.name)
    flow_run_id = str(flow_run.id) if flow_run.id else None
    with reading(engine) as conn:
        before = cursor.current(conn, spec.name, source.name)
        run = pull_ledger.unfinished(conn, spec.name, source.name, direction)
    if days is not None and run is not None and (run.window_start.date(), (run.window_end - timedelta(
            microseconds=1)).date()) != days:
        run = None  # an unfinished re-pull of other days is not this one
    if restart and run is not None:
        logger.warning("%s: abandoning pull %s (%s); reading from the cursor instead", spec.name, run.run_id, run.status)
        pull_ledger.finish(engine, run.run_id, PullStatus.ABANDONED, datetime.now(timezone.utc), "abandoned: --restart")
        run = None
    reader = _Pages(settings, spec, engine)
    resumed = run is not None
    try:
        if run is None:
            window_start = _window_start(settings, source, before, days)
            clock = reader.clock(window_start)
            window = (window_start, _window_end(source, clock, days))
            if window[1] <= window[0] and days is None:
                raise SourceError(f"{spec.name}: the source's clock {clock.isoformat()} minus settle is before the "
                                  f"window's start {window_start.isoformat()} (the cursor minus lookback): is the "
                                  "source's clock behind? (runbook: a stuck cursor)")
            run = pull_ledger.start(engine, spec.name, source.name, direction, window, clock, flow_run_id,
                                    datetime.now(timezone.utc))
        else:
            logger.info("%s: resuming pull %s (%s) after its last landed page", spec.name, run.run_id, run.status)
            pull_ledger.resume(engine, run, flow_run_id)
        if run.status != PullStatus.LANDED:
            _land(root, spec, source, engine, run, reader)
    except Exception as exc:  # the pages landed so far stay: the next pull resumes after them
        if run is not None:
            pull_ledger.finish(engine, run.run_id, PullStatus.FAILED, datetime.now(timezone.utc),
                               f"{type(exc).__name__}: {exc}".splitlines()[0])
        raise
    finally:
        reader.close()
    with reading(engine) as conn:
        pages = pull_ledger.landed_pages(conn, run.run_id)
    # produced_at: the run's window end, so a resumed pull writes the same manifests again
    touched = write_pull_manifests(root, spec.name, run.run_id, [p.asset_uri for p in pages], run.window_end)
    pull_ledger.finish(engine, run.run_id, PullStatus.LANDED, datetime.now(timezone.utc))
    action = Action.RUN if direction is Direction.FORWARD else Action.BACKFILL if direction is Direction.BACKFILL \
        else Action.REPLAY
    partitions = [_ingest(settings, spec, root, day, action, reason, operator) for day in touched]
    refresh_delivery_summary(settings)
    after = _settle_cursor(engine, spec, source, run, before, direction)
    if partitions:
        from flows.marts import after_commit

        after_commit(settings, spec.name)
    return _summarize(settings, spec, source, engine, run, resumed, before, after, partitions)


def _ingest(settings: FactorySettings, spec: DatasetSpec, root: Path, day: date, action: Action, reason: ActionReason,
            operator: str) -> PartitionSummary:
    """A touched day, ingested from every pull's manifests of it as one task run (as a backfill does):
    held partitions return their summary; a failure raises and leaves the pull LANDED, to be resumed."""
    declared = partition_manifests(root, spec.name, day)
    materializing = as_materialization(ingest_partition_task, table_assets(settings.database_url, spec),
                                       source_assets(declared))
    return materializing(settings=settings, dataset=spec.name, partition_key=day, declared=declared,  # type: ignore[no-any-return]
                         reason_code=reason.value, force=False, operator=operator, action=action.value)


def _land(root: Path, spec: DatasetSpec, source: PulledSource, engine: Engine, run: PullRun, reader: _Pages) -> None:
    with reading(engine) as conn:
        landed = pull_ledger.landed_pages(conn, run.run_id)
    window = (run.window_start, run.window_end)
    for number, token_before, records, token_after, attempts in reader.pages(run, landed):
        folder, page = land_page(root, spec, source, run.run_id, number, records, window, engine)
        seen = max((m for m in (page.newest_seen, reader.newest_in_source) if m is not None), default=None)
        pull_ledger.record_page(engine, run.run_id, number, token_before, token_after, page.record_count,
                                page.already_ingested, attempts, folder, page.newest, seen, datetime.now(timezone.utc))


def _settle_cursor(engine: Engine, spec: DatasetSpec, source: PulledSource, run: PullRun, before: CursorValue | None,
                   direction: Direction) -> CursorValue | None:
    """FORWARD: the cursor moves to the newest landed (cursor, key) when that is after it. BACKFILL,
    REPLAY: the event records what was read; the cursor stays. The pull is SUCCEEDED in the same transaction."""
    now = datetime.now(timezone.utc)
    window = (run.window_start, run.window_end)
    with engine.begin() as conn:
        found = pull_ledger.newest_landed(conn, run.run_id)
        after = before
        if found is not None and direction is Direction.FORWARD and (before is None or found[0] > before):
            cursor.advance(conn, spec.name, source.name, before, found[0], window, run.run_id, found[1], now)
            after = found[0]
        elif found is not None and direction is not Direction.FORWARD:
            cursor.record_repull(conn, spec.name, source.name, direction, found[0], window, run.run_id, found[1], now)
        pull_ledger.finish_in(conn, run.run_id, PullStatus.SUCCEEDED, now)
    return after


def _summarize(settings: FactorySettings, spec: DatasetSpec, source: PulledSource, engine: Engine, run: PullRun,
               resumed: bool, before: CursorValue | None, after: CursorValue | None,
               partitions: list[PartitionSummary]) -> PullSummary:
    with reading(engine) as conn:
        row = pull_ledger.run_row(conn, run.run_id)
    summary = PullSummary(
        dataset=spec.name, source=source.name, kind=source.kind, direction=run.direction.value, run_id=run.run_id,
        resumed=resumed, window_start=run.window_start, window_end=run.window_end, source_clock=run.source_clock,
        pages=row.pages, records=row.records, already_ingested=row.already_ingested, newest_seen=pull_ledger.as_utc(row.newest_seen),
        cursor_before=str(before) if before else None, cursor_after=str(after) if after else None,
        partitions=partitions)
    path = Path(settings.report_dir) / "pull_evidence" / spec.name / f"{run.run_id}.json"
    summary.evidence_path = str(path)
    write_atomic(path, json.dumps(summary.model_dump(mode="json"), indent=2) + "\n")
    _publish(summary)
    get_run_logger().info("%s: pulled %d record(s) in %d page(s), window %s to %s; cursor %s -> %s", spec.name,
                          summary.records, summary.pages, run.window_start.isoformat(), run.window_end.isoformat(),
                          summary.cursor_before, summary.cursor_after)
    return summary


def _publish(summary: PullSummary) -> None:
    from prefect.artifacts import create_markdown_artifact

    lines = [f"# Pull of {summary.dataset} ({summary.kind}, {summary.direction})", "",
             f"- window: {summary.window_start.isoformat()} to {summary.window_end.isoformat()} "
             f"(source clock {summary.source_clock.isoformat() if summary.source_clock else '-'})",
             f"- pages: {summary.pages}; records landed: {summary.records}" + (" (resumed)" if summary.resumed else ""),
             f"- cursor: {summary.cursor_before or '-'} -> {summary.cursor_after or '-'}",
             f"- partitions: " + (", ".join(f"{p.partition_key} {p.status}" for p in summary.partitions) or "none"),
             f"- evidence: {summary.evidence_path}"]
    create_markdown_artifact(key=f"pull-{summary.dataset.lower().replace('_', '-')}", markdown="\n".join(lines),
                             description=f"pull {summary.run_id}")
