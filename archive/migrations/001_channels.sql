-- Settled channels moved out of Redis after their hot window: the fields
-- the request logs filter and show, and the rest as one compressed
-- document (see package channels, folded).
CREATE TABLE riverhub_channels (
    channel_id  uuid   PRIMARY KEY,
    project_id  text   NOT NULL,
    workflow    text   NOT NULL,
    event_name  text   NOT NULL DEFAULT '',
    status      text   NOT NULL,
    created_ms  bigint NOT NULL,
    created_at  text   NOT NULL,
    updated_at  text   NOT NULL,
    doc         bytea  NOT NULL,
    entries     int    NOT NULL, -- timeline + delivery-log entries in doc: the copy with more wins
    archived_at timestamptz NOT NULL DEFAULT now()
);

-- The request logs: newest first, each filter and each pair of filters
-- driven by an index of its own (the event-name ones hold event-driven
-- channels only); all three filters together use one of the pairs'.
CREATE INDEX riverhub_channels_logs ON riverhub_channels (project_id, created_ms, channel_id);
CREATE INDEX riverhub_channels_logs_wf ON riverhub_channels (project_id, workflow, created_ms, channel_id);
CREATE INDEX riverhub_channels_logs_st ON riverhub_channels (project_id, status, created_ms, channel_id);
CREATE INDEX riverhub_channels_logs_wf_st ON riverhub_channels (project_id, workflow, status, created_ms, channel_id);
CREATE INDEX riverhub_channels_logs_ev ON riverhub_channels (project_id, event_name, created_ms, channel_id) WHERE event_name <> '';
CREATE INDEX riverhub_channels_logs_ev_st ON riverhub_channels (project_id, event_name, status, created_ms, channel_id) WHERE event_name <> '';
CREATE INDEX riverhub_channels_logs_wf_ev ON riverhub_channels (project_id, workflow, event_name, created_ms, channel_id) WHERE event_name <> '';
-- Retention needs no index of its own: channel ids are UUIDv7, ordered by
-- their creation time, so the primary key finds the oldest first.
