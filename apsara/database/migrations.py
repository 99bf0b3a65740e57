"""The schema, as numbered migrations applied once, in order, whoever starts first.

Every replica runs `migrate()` at start. A session advisory lock serializes them:
the first applies what `schema_migrations` lacks, each in its own transaction with
its row; the others then find nothing left to do. A migration is never edited
once released: a change is a new one at the end of MIGRATIONS.
"""
from __future__ import annotations

import psycopg

# An arbitrary constant: the advisory lock that only migrations take.
MIGRATION_LOCK = 0x41505341524D4947

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "conversations, their records, files, shared settings", """
CREATE TABLE conversations (
    owner        text   NOT NULL,
    id           text   NOT NULL,
    snapshot     bytea  NOT NULL,   -- the document as of snapshot_seq (JSON)
    snapshot_seq bigint NOT NULL,
    generation   bigint NOT NULL,   -- bumped whenever the snapshot is rewritten
    seq          bigint NOT NULL,   -- the newest record's number
    record_bytes bigint NOT NULL,   -- bytes of records since the snapshot
    header       bytea  NOT NULL,   -- the current header (JSON), for listings
    updated_at   text   NOT NULL,
    updated_ns   bigint NOT NULL,
    message_count integer NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE INDEX conversations_newest ON conversations (owner, updated_ns DESC, id);
CREATE TABLE conversation_records (
    owner           text   NOT NULL,
    conversation_id text   NOT NULL,
    seq             bigint NOT NULL,
    body            bytea  NOT NULL,
    PRIMARY KEY (owner, conversation_id, seq),
    FOREIGN KEY (owner, conversation_id) REFERENCES conversations (owner, id) ON DELETE CASCADE
);
CREATE TABLE files (
    owner text  NOT NULL,
    id    text  NOT NULL,
    meta  bytea NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE TABLE file_chunks (
    owner   text    NOT NULL,
    file_id text    NOT NULL,
    n       integer NOT NULL,
    data    bytea   NOT NULL,
    PRIMARY KEY (owner, file_id, n)
);
CREATE TABLE shared_settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);
"""),
    (2, "usage ledger, budget reservations, rate-limit counters and stream slots", """
CREATE TABLE usage (
    owner text NOT NULL, day text NOT NULL, model text NOT NULL, conversation text NOT NULL,
    purpose text NOT NULL, calls bigint NOT NULL, prompt_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL, thought_tokens bigint NOT NULL, cached_tokens bigint NOT NULL,
    total_tokens bigint NOT NULL, cost_usd double precision NOT NULL,
    PRIMARY KEY (owner, day, model, conversation, purpose)
);
CREATE INDEX usage_by_day ON usage (day);
CREATE TABLE spend (
    owner text NOT NULL, day text NOT NULL, tokens bigint NOT NULL, cost_usd double precision NOT NULL,
    PRIMARY KEY (owner, day)
);
CREATE TABLE reservations (
    id text PRIMARY KEY, owner text NOT NULL, tokens bigint NOT NULL, cost_usd double precision NOT NULL,
    pid integer NOT NULL, host text NOT NULL, started double precision NOT NULL
);
CREATE INDEX reservations_by_owner ON reservations (owner);
CREATE TABLE rate_counters (key text PRIMARY KEY, count bigint NOT NULL, expires double precision NOT NULL);
CREATE TABLE stream_slots (
    id text PRIMARY KEY, owner text NOT NULL, pid integer NOT NULL, host text NOT NULL,
    started double precision NOT NULL
);
CREATE INDEX stream_slots_by_owner ON stream_slots (owner);
"""),
    (3, "file bytes stored as they are: no compression attempt on media that does not compress", """
ALTER TABLE file_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
"""),
    (4, "search texts: titles and every version of every message, for full-text search", """
CREATE TABLE search_texts (
    owner           text NOT NULL,
    conversation_id text NOT NULL,
    kind            text NOT NULL,   -- 'title' or 'message'
    body            text NOT NULL,
    words           tsvector GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED,
    FOREIGN KEY (owner, conversation_id) REFERENCES conversations (owner, id) ON DELETE CASCADE
);
CREATE INDEX search_texts_words ON search_texts USING gin (words);
CREATE INDEX search_texts_conversation ON search_texts (owner, conversation_id);
"""),
    (5, "the listing's flags as columns: a header jsonb cannot read (a \\u0000 in a title) broke every listing", """
ALTER TABLE conversations ADD COLUMN archived boolean NOT NULL DEFAULT false,
                          ADD COLUMN pinned boolean NOT NULL DEFAULT false,
                          ADD COLUMN temporary boolean NOT NULL DEFAULT false;
CREATE FUNCTION pg_temp.header_flag(header bytea, flag text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RETURN COALESCE((convert_from(header, 'UTF8')::jsonb ->> flag)::boolean, false);
EXCEPTION WHEN others THEN  -- jsonb refuses an escaped NUL: the header's own key, as JSON wrote it
    RETURN position(('"' || flag || '":true') IN convert_from(header, 'UTF8')) > 0;
END $$;
UPDATE conversations SET archived = pg_temp.header_flag(header, 'archived'),
                         pinned = pg_temp.header_flag(header, 'pinned'),
                         temporary = pg_temp.header_flag(header, 'temporary');
"""),
    (6, "held rows name their holder's process start and carry a heartbeat: a dead holder's holds end", """
ALTER TABLE stream_slots ADD COLUMN process text, ADD COLUMN seen double precision;
ALTER TABLE reservations ADD COLUMN process text, ADD COLUMN seen double precision;
"""),
    (7, "imports under way: what a killed import had stored is taken back", """
CREATE TABLE pending_imports (
    token text PRIMARY KEY,
    entry bytea NOT NULL   -- JSON: owner, the conversation ids it stores, its writer
);
"""),
]


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply what is missing (conn in autocommit); returns the versions applied here."""
    applied_here = []
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     "version integer PRIMARY KEY, name text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            with conn.transaction():
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied_here.append(version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied_here
