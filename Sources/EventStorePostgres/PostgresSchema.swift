/// The tables, sequence and functions of one event store schema, as numbered migrations.
///
/// Gap-safe global order without serialising commits: an append takes its block of global positions under a
/// short session-level advisory lock and, inside that same critical section, a shared transaction-level
/// advisory lock whose key is its first position. That second lock is held until the transaction ends, so the
/// lock table always lists the first position of every append still in flight. A reader (`read_events`) first
/// reads the sequence and the in-flight positions, then, in a later statement with a fresh snapshot, returns
/// only events below the lowest in-flight position (and below the next unallocated one). An event that commits
/// late therefore holds readers back instead of being skipped, and appends still commit in parallel and share
/// WAL flushes. Only appends in the same schema hold readers back.
struct PostgresSchema {
    /// The validated, quoted schema name, e.g. `"eventcore"`.
    let quoted: String
    /// The advisory lock key that serialises position allocation in this schema.
    let positionLockKey: Int64
    /// The first key of the shared in-flight locks (the second key is the first position modulo 2^31).
    let inFlightLockKey: Int32

    init(name: String) {
        quoted = "\"\(name)\""
        // FNV-1a: a stable key per schema, so stores in different schemas never wait for each other.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "eventcore.positions.\(name)".utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        positionLockKey = Int64(bitPattern: hash)
        inFlightLockKey = Int32(truncatingIfNeeded: hash >> 33)
    }

    /// Migrations in order, each a list of statements; migration n (1-based) is recorded as version n in
    /// `schema_migrations`.
    var migrations: [[String]] {
        [migration1, migration2, migration3, migration4, migration5]
    }

    /// Migration 5 replaces `append_events_batch` with the version that locks and updates the batch's stream rows
    /// one statement per stream, each a lookup by primary key. PostgreSQL plans such a statement once per
    /// connection and reuses the plan, whatever the table's statistics; the statements over the whole array of
    /// streams (`= ANY(...)`, a join with `unnest`) were planned anew on every call, since a plan for the actual
    /// arrays always looked cheaper than a generic one. One call of a one-request batch takes about a sixth less
    /// time (pgbench, one client: 1,660–1,760 calls/s before, 1,930–2,130 after).
    private var migration5: [String] {
        [batchProcedure(lockingStreamsOneByOne: true)]
    }

    /// Migration 4 adds `append_events_batch`: group commit. Appends that arrive while another is in flight are sent
    /// together, as one call in one transaction, and each still gets its own verdict (see `batchProcedure`).
    private var migration4: [String] {
        [batchProcedure(lockingStreamsOneByOne: false)]
    }

    /// `append_events_batch`: several appends in one transaction and one round trip, committed before the server answers.
    ///
    /// The requests come flattened: every stream of the batch once (`p_batch_streams`); per request its number
    /// of stream entries (`p_stream_counts`; the entries in
    /// `p_streams`/`p_expected`, -1 for no expectation), its number of events (`p_event_counts`; the events in
    /// the event arrays), its recorded-at time and its idempotency key ('' for none). Every stream of the batch
    /// is locked first, in the same id order `append_events` uses, so batches and single appends never deadlock.
    /// The requests are then judged in order against the versions left by the earlier ones: a recorded key makes
    /// a request a duplicate (outcome 1), a failed expectation a conflict (outcome 2); neither writes anything nor
    /// affects the others. The accepted requests (outcome 0) get one block of positions for the whole batch,
    /// under the same position lock and in-flight marker as `append_events`, so positions stay gap-free in commit
    /// order. Per request it returns the outcome and its offset in the block (-1 if it wrote nothing); per stream
    /// entry the stream's version just before the request (for a conflict: the actual version).
    ///
    /// Anything unexpected (a stored event id, a key recorded concurrently by another transaction) raises, and the
    /// whole batch rolls back: the caller then runs the requests one by one through `append_events_committed`.
    ///
    /// `lockingStreamsOneByOne` selects how the stream rows are locked and updated: by one statement over all of
    /// them (migration 4, kept as it ran) or by one statement per stream (migration 5, see there).
    private func batchProcedure(lockingStreamsOneByOne oneByOne: Bool) -> String {
        let lockStreams = oneByOne ? """
                -- Lock in id order, creating missing rows in that order, one primary-key lookup per stream.
                v_ids := ARRAY(SELECT t.id FROM unnest(p_batch_streams) AS t(id) ORDER BY t.id);
                v_start := '{}';
                FOREACH v_id IN ARRAY v_ids LOOP
                    SELECT s.version INTO v_version FROM \(quoted).streams s WHERE s.stream_id = v_id FOR UPDATE;
                    IF NOT FOUND THEN
                        INSERT INTO \(quoted).streams AS s (stream_id, version) VALUES (v_id, 0)
                            ON CONFLICT (stream_id) DO UPDATE SET version = s.version WHERE false;
                        SELECT s.version INTO v_version FROM \(quoted).streams s WHERE s.stream_id = v_id;
                    END IF;
                    v_start := v_start || v_version;
                END LOOP;
        """ : """
                -- As in append_events: lock in id order, create missing rows in id order. One statement in the common
                -- case, where every stream has its row: the locked rows' ids and versions.
                SELECT coalesce(array_agg(l.stream_id), '{}'), coalesce(array_agg(l.version), '{}') INTO v_ids, v_start FROM (
                    SELECT s.stream_id, s.version FROM \(quoted).streams s WHERE s.stream_id = ANY(p_batch_streams)
                    ORDER BY s.stream_id FOR UPDATE
                ) l;
                IF cardinality(v_ids) < cardinality(p_batch_streams) THEN
                    INSERT INTO \(quoted).streams AS s (stream_id, version)
                        SELECT t.id, 0 FROM unnest(p_batch_streams) AS t(id) ORDER BY t.id
                        ON CONFLICT (stream_id) DO UPDATE SET version = s.version WHERE false;
                    SELECT coalesce(array_agg(t.id), '{}'), coalesce(array_agg(s.version), '{}') INTO v_ids, v_start
                        FROM unnest(p_batch_streams) AS t(id) JOIN \(quoted).streams s ON s.stream_id = t.id;
                END IF;
        """
        let updateStreams = oneByOne ? """
                    FOR i IN 1 .. cardinality(v_ids) LOOP
                        IF v_current[i] <> v_start[i] THEN
                            UPDATE \(quoted).streams s SET version = v_current[i] WHERE s.stream_id = v_ids[i];
                        END IF;
                    END LOOP;
        """ : """
                    UPDATE \(quoted).streams s SET version = c.version
                        FROM unnest(v_ids, v_start, v_current) AS c(id, start, version)
                        WHERE c.version <> c.start AND s.stream_id = c.id;
        """
        return """
        CREATE \(oneByOne ? "OR REPLACE " : "")PROCEDURE \(quoted).append_events_batch(
            p_batch_streams text[], p_stream_counts int4[], p_streams text[], p_expected int8[],
            p_event_counts int4[], p_event_ids uuid[], p_event_streams text[], p_types text[], p_payloads bytea[],
            p_correlation text[], p_causation text[], p_source text[], p_traceparent text[], p_event_recorded_at_us int8[],
            p_recorded_at_us int8[], p_keys text[],
            INOUT o_outcomes int4[] DEFAULT NULL, INOUT o_first_position int8 DEFAULT NULL,
            INOUT o_offsets int4[] DEFAULT NULL, INOUT o_versions int8[] DEFAULT NULL
        )
        LANGUAGE plpgsql AS $body$
        DECLARE
            v_ids text[];
            v_start int8[];
            v_current int8[];
            v_stream int := 1;
            v_event int := 1;
            v_total int := 0;
            v_outcome int4;
            v_index int;
            v_event_offsets int4[] := array_fill(NULL::int4, ARRAY[cardinality(p_event_ids)]);
            v_event_versions int8[] := array_fill(NULL::int8, ARRAY[cardinality(p_event_ids)]);
            v_keys text[] := '{}';
            v_key_offsets int4[] := '{}';
            v_key_counts int4[] := '{}';
            v_key_versions text[] := '{}';
            v_key_recorded int8[] := '{}';
            v_versions_text text;
            v_last int8;
            v_called bool;
            v_first int8;
            v_inserted int8;\(oneByOne ? "\n    v_id text;\n    v_version int8;" : "")
        BEGIN
        \(lockStreams)
            v_current := v_start;
            o_outcomes := '{}';
            o_offsets := '{}';
            o_versions := '{}';

            FOR r IN 1 .. cardinality(p_keys) LOOP
                v_outcome := 0;
                IF p_keys[r] <> '' THEN
                    IF p_keys[r] = ANY(v_keys) OR EXISTS (
                            SELECT 1 FROM \(quoted).idempotency_keys k WHERE k.idempotency_key = p_keys[r]) THEN
                        v_outcome := 1;
                    END IF;
                END IF;
                FOR i IN v_stream .. v_stream + p_stream_counts[r] - 1 LOOP
                    v_index := array_position(v_ids, p_streams[i]);
                    o_versions := array_append(o_versions, v_current[v_index]);
                    IF v_outcome = 0 AND p_expected[i] >= 0 AND p_expected[i] <> v_current[v_index] THEN
                        v_outcome := 2;
                    END IF;
                END LOOP;
                o_outcomes := array_append(o_outcomes, v_outcome);
                IF v_outcome = 0 THEN
                    o_offsets := array_append(o_offsets, v_total);
                    IF p_keys[r] <> '' THEN
                        v_keys := array_append(v_keys, p_keys[r]);
                        v_key_offsets := array_append(v_key_offsets, v_total);
                        v_key_counts := array_append(v_key_counts, p_event_counts[r]);
                        v_key_recorded := array_append(v_key_recorded, p_recorded_at_us[r]);
                    END IF;
                    FOR e IN v_event .. v_event + p_event_counts[r] - 1 LOOP
                        v_index := array_position(v_ids, p_event_streams[e]);
                        v_current[v_index] := v_current[v_index] + 1;
                        v_event_versions[e] := v_current[v_index];
                        v_event_offsets[e] := v_total;
                        v_total := v_total + 1;
                    END LOOP;
                    IF p_keys[r] <> '' THEN
                        SELECT coalesce(json_object_agg(t.id, v_current[array_position(v_ids, t.id)] ORDER BY t.id)::text, '{}')
                            INTO v_versions_text
                            FROM unnest(p_streams[v_stream : v_stream + p_stream_counts[r] - 1]) AS t(id);
                        v_key_versions := array_append(v_key_versions, v_versions_text);
                    END IF;
                ELSE
                    o_offsets := array_append(o_offsets, -1);
                END IF;
                v_stream := v_stream + p_stream_counts[r];
                v_event := v_event + p_event_counts[r];
            END LOOP;

            IF v_total > 0 THEN
                -- Positions and the in-flight marker exactly as in append_events, once for the whole batch.
                PERFORM pg_advisory_lock(\(positionLockKey));
                BEGIN
                    SELECT q.last_value, q.is_called INTO v_last, v_called FROM \(quoted).global_positions q;
                    v_first := CASE WHEN v_called THEN v_last + 1 ELSE v_last END;
                    -- Under the lock nobody else moves the sequence: setval takes the whole block at once.
                    PERFORM pg_advisory_xact_lock_shared(\(inFlightLockKey), (v_first % 2147483648)::int4),
                            setval('\(quoted).global_positions', v_first + v_total - 1, true);
                EXCEPTION WHEN OTHERS THEN
                    PERFORM pg_advisory_unlock(\(positionLockKey));
                    RAISE;
                END;
                PERFORM pg_advisory_unlock(\(positionLockKey));

                INSERT INTO \(quoted).events (global_position, event_id, stream_id, stream_version, event_type, payload,
                        correlation_id, causation_id, source_message_id, traceparent, recorded_at_us)
                    SELECT v_first + e.off, e.id, e.stream, e.version, e.type, e.payload,
                           nullif(e.corr, ''), nullif(e.caus, ''), nullif(e.src, ''), nullif(e.tp, ''), e.recorded
                    FROM unnest(p_event_ids, p_event_streams, p_types, p_payloads, p_correlation, p_causation, p_source,
                                p_traceparent, p_event_recorded_at_us, v_event_offsets, v_event_versions)
                             AS e(id, stream, type, payload, corr, caus, src, tp, recorded, off, version)
                    WHERE e.off IS NOT NULL;
        \(updateStreams)
            END IF;

            IF cardinality(v_keys) > 0 THEN
                INSERT INTO \(quoted).idempotency_keys (idempotency_key, first_position, last_position, stream_versions, recorded_at_us)
                    SELECT k.key, CASE WHEN k.n > 0 THEN v_first + k.off END, CASE WHEN k.n > 0 THEN v_first + k.off + k.n - 1 END,
                           k.versions, k.recorded
                    FROM unnest(v_keys, v_key_offsets, v_key_counts, v_key_versions, v_key_recorded) AS k(key, off, n, versions, recorded)
                    ON CONFLICT (idempotency_key) DO NOTHING;
                GET DIAGNOSTICS v_inserted = ROW_COUNT;
                IF v_inserted < cardinality(v_keys) THEN
                    RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'eventcore: duplicate';
                END IF;
            END IF;

            o_first_position := v_first;
            COMMIT;
        END
        $body$
        """
    }

    /// Migration 3 replaces `append_events` with the version that locks the streams before it takes its
    /// positions (before it, two appends racing on one stream could store a later version at an earlier global
    /// position) and creates new stream rows in id order (before it, appends creating the same new streams
    /// could deadlock, so an append without expectations could fail with a conflict).
    private var migration3: [String] {
        [appendFunction(replacing: true)]
    }

    /// `append_events_committed`: the append function followed by COMMIT inside a procedure, so the server
    /// answers the call only once the append is committed, in one round trip. (A plain statement in the
    /// extended protocol is reported complete before its implicit transaction commits at the next Sync.)
    private var migration2: [String] {
        [
            """
            CREATE PROCEDURE \(quoted).append_events_committed(
                p_streams text[], p_expected int8[],
                p_event_ids uuid[], p_event_streams text[], p_types text[], p_payloads bytea[],
                p_correlation text[], p_causation text[], p_source text[], p_traceparent text[],
                p_recorded_at_us int8, p_key text,
                INOUT o_outcome text DEFAULT NULL, INOUT o_first_position int8 DEFAULT NULL,
                INOUT o_last_position int8 DEFAULT NULL, INOUT o_versions int8[] DEFAULT NULL,
                INOUT o_recorded_versions text DEFAULT NULL
            )
            LANGUAGE plpgsql AS $body$
            BEGIN
                SELECT r.outcome, r.first_position, r.last_position, r.versions, r.recorded_versions
                    INTO o_outcome, o_first_position, o_last_position, o_versions, o_recorded_versions
                    FROM \(quoted).append_events(p_streams, p_expected, p_event_ids, p_event_streams, p_types, p_payloads,
                        p_correlation, p_causation, p_source, p_traceparent, p_recorded_at_us, p_key) r;
                COMMIT;
            END
            $body$
            """,
        ]
    }

    private var migration1: [String] {
        [
            """
            CREATE TABLE \(quoted).events (
                global_position int8 PRIMARY KEY,
                event_id uuid NOT NULL UNIQUE,
                stream_id text NOT NULL,
                stream_version int8 NOT NULL,
                event_type text NOT NULL,
                payload bytea NOT NULL,
                correlation_id text,
                causation_id text,
                source_message_id text,
                traceparent text,
                recorded_at_us int8 NOT NULL,
                UNIQUE (stream_id, stream_version)
            )
            """,
            "CREATE INDEX events_by_type ON \(quoted).events (event_type, global_position)",
            "CREATE INDEX events_by_time ON \(quoted).events (recorded_at_us)",
            """
            CREATE TABLE \(quoted).streams (
                stream_id text PRIMARY KEY,
                version int8 NOT NULL
            )
            """,
            "CREATE SEQUENCE \(quoted).global_positions AS int8 CACHE 1",
            """
            CREATE TABLE \(quoted).idempotency_keys (
                idempotency_key text PRIMARY KEY,
                first_position int8,
                last_position int8,
                stream_versions text NOT NULL,
                recorded_at_us int8 NOT NULL
            )
            """,
            appendFunction(replacing: false),
            """
            CREATE FUNCTION \(quoted).read_events(
                p_after int8, p_limit int8, p_types text[], p_from_us int8, p_before_us int8
            ) RETURNS SETOF \(quoted).events
            LANGUAGE plpgsql AS $body$
            DECLARE
                v_last int8;
                v_called bool;
                v_next int8;
                v_horizon int8;
            BEGIN
                SELECT q.last_value, q.is_called INTO v_last, v_called FROM \(quoted).global_positions q;
                v_next := CASE WHEN v_called THEN v_last + 1 ELSE v_last END;
                SELECT least(v_next, min(v_next - (((v_next - l.objid::int8) % 2147483648) + 2147483648) % 2147483648))
                    INTO v_horizon
                    FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.classid::int8 = \(Int64(inFlightLockKey) & 0xFFFF_FFFF)
                      AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
                -- A new statement, so a new snapshot: everything below the horizon has committed or never will.
                RETURN QUERY SELECT e.* FROM \(quoted).events e
                    WHERE e.global_position > p_after AND e.global_position < v_horizon
                      AND (cardinality(p_types) = 0 OR e.event_type = ANY(p_types))
                      AND e.recorded_at_us >= p_from_us AND e.recorded_at_us < p_before_us
                    ORDER BY e.global_position LIMIT p_limit;
            END
            $body$
            """,
        ]
    }

    /// `append_events`: the whole append (idempotency check, positions, stream locks, conflict check, inserts)
    /// as one function, so an append is one round trip.
    private func appendFunction(replacing: Bool) -> String {
        """
        CREATE \(replacing ? "OR REPLACE " : "")FUNCTION \(quoted).append_events(
            p_streams text[], p_expected int8[],
            p_event_ids uuid[], p_event_streams text[], p_types text[], p_payloads bytea[],
            p_correlation text[], p_causation text[], p_source text[], p_traceparent text[],
            p_recorded_at_us int8, p_key text
        ) RETURNS TABLE (outcome text, first_position int8, last_position int8, versions int8[], recorded_versions text)
        LANGUAGE plpgsql AS $body$
        DECLARE
            v_count int := coalesce(array_length(p_event_ids, 1), 0);
            v_first int8;
            v_actual int8[];
            v_record record;
            v_last int8;
            v_called bool;
            v_found int8;
        BEGIN
            IF p_key <> '' THEN
                SELECT k.first_position, k.last_position, k.stream_versions INTO v_record
                    FROM \(quoted).idempotency_keys k WHERE k.idempotency_key = p_key;
                IF FOUND THEN
                    RETURN QUERY SELECT 'duplicate'::text, v_record.first_position, v_record.last_position, NULL::int8[], v_record.stream_versions;
                    RETURN;
                END IF;
            END IF;

            -- Lock every stream of the request in id order (one order for everyone, so appends do not
            -- deadlock) and read the versions they hold under the lock. Streams seen for the first time get
            -- a row, created in the same id order: a concurrent append creating the same stream waits for
            -- this one instead of locking the two rows in opposite orders. (ON CONFLICT DO UPDATE ... WHERE
            -- false locks a row another append created meanwhile, without changing it.)
            SELECT count(*) INTO v_found FROM (
                SELECT 1 FROM \(quoted).streams s WHERE s.stream_id = ANY(p_streams) ORDER BY s.stream_id FOR UPDATE
            ) locked;
            IF v_found < cardinality(p_streams) THEN
                INSERT INTO \(quoted).streams AS s (stream_id, version)
                    SELECT t.id, 0 FROM unnest(p_streams) AS t(id) ORDER BY t.id
                    ON CONFLICT (stream_id) DO UPDATE SET version = s.version WHERE false;
            END IF;
            SELECT coalesce(array_agg(coalesce(s.version, 0) ORDER BY t.ord), '{}') INTO v_actual
                FROM unnest(p_streams) WITH ORDINALITY AS t(id, ord)
                LEFT JOIN \(quoted).streams s ON s.stream_id = t.id;

            IF EXISTS (SELECT 1 FROM unnest(p_expected, v_actual) AS c(expected, actual)
                       WHERE c.expected >= 0 AND c.expected <> c.actual) THEN
                IF p_key <> '' THEN
                    SELECT k.first_position, k.last_position, k.stream_versions INTO v_record
                        FROM \(quoted).idempotency_keys k WHERE k.idempotency_key = p_key;
                    IF FOUND THEN
                        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'eventcore: duplicate';
                    END IF;
                END IF;
                RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'eventcore: version conflict',
                    DETAIL = array_to_string(v_actual, ',');
            END IF;

            -- A block of positions, and the in-flight marker readers respect (see the type's documentation). It is
            -- taken after the stream locks, so that within a stream global order is version order.
            IF v_count > 0 THEN
                PERFORM pg_advisory_lock(\(positionLockKey));
                BEGIN
                    SELECT q.last_value, q.is_called INTO v_last, v_called FROM \(quoted).global_positions q;
                    v_first := CASE WHEN v_called THEN v_last + 1 ELSE v_last END;
                    PERFORM pg_advisory_xact_lock_shared(\(inFlightLockKey), (v_first % 2147483648)::int4);
                    -- Under the lock nobody else advances the sequence, so these are v_first, v_first + 1, ...
                    PERFORM nextval('\(quoted).global_positions') FROM generate_series(1, v_count);
                EXCEPTION WHEN OTHERS THEN
                    PERFORM pg_advisory_unlock(\(positionLockKey));
                    RAISE;
                END;
                PERFORM pg_advisory_unlock(\(positionLockKey));
            END IF;

            IF v_count > 0 THEN
                INSERT INTO \(quoted).events (global_position, event_id, stream_id, stream_version, event_type, payload,
                        correlation_id, causation_id, source_message_id, traceparent, recorded_at_us)
                    SELECT v_first + e.ord - 1, e.id, e.stream,
                           a.version + row_number() OVER (PARTITION BY e.stream ORDER BY e.ord),
                           e.type, e.payload, nullif(e.corr, ''), nullif(e.caus, ''), nullif(e.src, ''), nullif(e.tp, ''),
                           p_recorded_at_us
                    FROM unnest(p_event_ids, p_event_streams, p_types, p_payloads, p_correlation, p_causation, p_source, p_traceparent)
                             WITH ORDINALITY AS e(id, stream, type, payload, corr, caus, src, tp, ord)
                    JOIN unnest(p_streams, v_actual) AS a(stream_id, version) ON a.stream_id = e.stream;
                UPDATE \(quoted).streams s SET version = s.version + c.n
                    FROM (SELECT w.stream, count(*) AS n FROM unnest(p_event_streams) AS w(stream) GROUP BY w.stream) c
                    WHERE s.stream_id = c.stream;
            END IF;

            IF p_key <> '' THEN
                INSERT INTO \(quoted).idempotency_keys (idempotency_key, first_position, last_position, stream_versions, recorded_at_us)
                    SELECT p_key, v_first, v_first + v_count - 1,
                           coalesce((SELECT json_object_agg(a.stream_id, a.version + coalesce(c.n, 0) ORDER BY a.stream_id)
                                     FROM unnest(p_streams, v_actual) AS a(stream_id, version)
                                     LEFT JOIN (SELECT w.stream, count(*) AS n FROM unnest(p_event_streams) AS w(stream) GROUP BY w.stream) c
                                            ON c.stream = a.stream_id)::text, '{}'),
                           p_recorded_at_us
                    ON CONFLICT (idempotency_key) DO NOTHING;
                IF NOT FOUND THEN
                    RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'eventcore: duplicate';
                END IF;
            END IF;

            RETURN QUERY SELECT 'committed'::text, v_first, v_first + v_count - 1, v_actual, NULL::text;
        END
        $body$
        """
    }
}
