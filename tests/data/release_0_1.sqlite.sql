-- The warehouse as data-factory release 0.1 (commit 7b9ea9a) created it: every table and index.

-- Generated from that release's schemas/tables.py; tests/test_migrations.py upgrades it.

CREATE TABLE check_result (
	id INTEGER NOT NULL, 
	dataset VARCHAR(64) NOT NULL, 
	partition_key VARCHAR(10) NOT NULL, 
	batch_id VARCHAR(36) NOT NULL, 
	run_id VARCHAR(36) NOT NULL, 
	check_name VARCHAR(48) NOT NULL, 
	severity VARCHAR(8) NOT NULL, 
	status VARCHAR(8) NOT NULL, 
	observed FLOAT, 
	warn_above FLOAT, 
	error_above FLOAT, 
	detail TEXT NOT NULL, 
	checked_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_check_per_run UNIQUE (run_id, check_name)
);

CREATE INDEX ix_check_result_run_id ON check_result (run_id);

CREATE TABLE decision_log (
	id INTEGER NOT NULL, 
	decided_at DATETIME NOT NULL, 
	action VARCHAR(16) NOT NULL, 
	reason_code VARCHAR(48) NOT NULL, 
	operator VARCHAR(128) NOT NULL, 
	dataset VARCHAR(64) NOT NULL, 
	partition_key VARCHAR(10) NOT NULL, 
	batch_id VARCHAR(36), 
	run_id VARCHAR(36), 
	flow_run_id VARCHAR(36), 
	outcome VARCHAR(16) NOT NULL, 
	detail TEXT, 
	PRIMARY KEY (id)
);

CREATE TABLE ingest_batch (
	batch_id VARCHAR(36) NOT NULL, 
	dataset VARCHAR(64) NOT NULL, 
	partition_key VARCHAR(10) NOT NULL, 
	source_fingerprint VARCHAR(64) NOT NULL, 
	manifest_ids TEXT NOT NULL, 
	first_seen_at DATETIME NOT NULL, 
	PRIMARY KEY (batch_id), 
	CONSTRAINT uq_batch_inputs UNIQUE (dataset, partition_key, source_fingerprint)
);

CREATE TABLE lake_current (
	dataset VARCHAR(64) NOT NULL, 
	partition_key VARCHAR(10) NOT NULL, 
	snapshot_id VARCHAR(64) NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (dataset, partition_key)
);

CREATE TABLE lake_snapshot (
	snapshot_id VARCHAR(64) NOT NULL, 
	dataset VARCHAR(64) NOT NULL, 
	partition_key VARCHAR(10) NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	rows INTEGER NOT NULL, 
	files INTEGER NOT NULL, 
	record_sha256 VARCHAR(64) NOT NULL, 
	committed_at DATETIME NOT NULL, 
	retired_at DATETIME, 
	PRIMARY KEY (snapshot_id)
);

CREATE INDEX ix_lake_snapshot_partition ON lake_snapshot (dataset, partition_key);

CREATE TABLE partition_state (
	dataset VARCHAR(64) NOT NULL, 
	partition_key VARCHAR(10) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	source_fingerprint VARCHAR(64) NOT NULL, 
	batch_id VARCHAR(36) NOT NULL, 
	run_id VARCHAR(36) NOT NULL, 
	output_count INTEGER NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (dataset, partition_key)
);

CREATE TABLE quarantine (
	id INTEGER NOT NULL, 
	dataset VARCHAR(64) NOT NULL, 
	partition_key VARCHAR(10) NOT NULL, 
	batch_id VARCHAR(36) NOT NULL, 
	manifest_id TEXT NOT NULL, 
	source_uri TEXT NOT NULL, 
	line_number INTEGER NOT NULL, 
	reason_code VARCHAR(32) NOT NULL, 
	detail TEXT NOT NULL, 
	event_id TEXT, 
	raw_payload TEXT NOT NULL, 
	quarantined_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_quarantine_record UNIQUE (dataset, manifest_id, source_uri, line_number)
);

CREATE INDEX ix_quarantine_event_id ON quarantine (event_id);

CREATE INDEX ix_quarantine_partition ON quarantine (dataset, partition_key);

CREATE TABLE raw_ticket_event (
	event_id VARCHAR NOT NULL, 
	ticket_id VARCHAR NOT NULL, 
	updated_at DATETIME NOT NULL, 
	_content_hash VARCHAR(32) NOT NULL, 
	_raw_payload TEXT NOT NULL, 
	_delivery_key VARCHAR NOT NULL, 
	_source_uri TEXT NOT NULL, 
	_line_number INTEGER NOT NULL, 
	_partition_key VARCHAR(10) NOT NULL, 
	_batch_id VARCHAR(36) NOT NULL, 
	_manifest_id TEXT NOT NULL, 
	_ingested_at DATETIME NOT NULL, 
	PRIMARY KEY (event_id)
);

CREATE INDEX ix_raw_ticket_event_entity_order ON raw_ticket_event (ticket_id, updated_at, event_id);

CREATE TABLE redelivery (
	id INTEGER NOT NULL, 
	dataset VARCHAR(64) NOT NULL, 
	event_id VARCHAR NOT NULL, 
	content_hash VARCHAR(32) NOT NULL, 
	delivery_key VARCHAR NOT NULL, 
	partition_key VARCHAR(10) NOT NULL, 
	batch_id VARCHAR(36) NOT NULL, 
	manifest_id TEXT NOT NULL, 
	source_uri TEXT NOT NULL, 
	line_number INTEGER NOT NULL, 
	raw_payload TEXT NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_redelivery_record UNIQUE (dataset, manifest_id, source_uri, line_number)
);

CREATE INDEX ix_redelivery_event_id ON redelivery (event_id);

CREATE TABLE ticket_fact (
	last_event_id VARCHAR NOT NULL, 
	ticket_id VARCHAR NOT NULL, 
	last_event_type TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	status TEXT NOT NULL, 
	priority TEXT NOT NULL, 
	channel TEXT NOT NULL, 
	customer_id TEXT NOT NULL, 
	subject TEXT NOT NULL, 
	body TEXT NOT NULL, 
	product_line TEXT, 
	tags TEXT NOT NULL, 
	_partition_key VARCHAR(10) NOT NULL, 
	_batch_id VARCHAR(36) NOT NULL, 
	_manifest_id TEXT NOT NULL, 
	_ingested_at DATETIME NOT NULL, 
	PRIMARY KEY (ticket_id)
);

CREATE TABLE verify_finding (
	id INTEGER NOT NULL, 
	dataset VARCHAR(64) NOT NULL, 
	partition_key VARCHAR(10) NOT NULL, 
	reason_code VARCHAR(48) NOT NULL, 
	current INTEGER NOT NULL, 
	location TEXT NOT NULL, 
	detail TEXT NOT NULL, 
	found_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_verify_finding_partition_key ON verify_finding (partition_key);

CREATE TABLE ingest_run (
	run_id VARCHAR(36) NOT NULL, 
	batch_id VARCHAR(36) NOT NULL, 
	dataset VARCHAR(64) NOT NULL, 
	partition_key VARCHAR(10) NOT NULL, 
	attempt INTEGER NOT NULL, 
	action VARCHAR(16) NOT NULL, 
	mode VARCHAR(16) NOT NULL, 
	reason_code VARCHAR(48) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	flow_run_id VARCHAR(36), 
	started_at DATETIME NOT NULL, 
	heartbeat_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	counts TEXT, 
	error TEXT, 
	PRIMARY KEY (run_id), 
	CONSTRAINT uq_run_attempt UNIQUE (batch_id, attempt), 
	FOREIGN KEY(batch_id) REFERENCES ingest_batch (batch_id)
);

CREATE INDEX ix_ingest_run_flow_run ON ingest_run (flow_run_id);

CREATE INDEX ix_ingest_run_partition ON ingest_run (dataset, partition_key, status);
