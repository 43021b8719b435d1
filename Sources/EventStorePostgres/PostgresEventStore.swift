import EventCore
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// The event store shared by a fleet: PostgreSQL through a `PostgresClient` connection pool.
///
/// Everything lives in one schema (``Configuration/schema``), created and migrated by ``migrate()``, which
/// ``start(client:configuration:logger:)`` runs. An append is one call of a server-side procedure, so it costs
/// one round trip and commits atomically: stream rows are locked in id order (no deadlocks between appends),
/// every expected version is checked under those locks, events are inserted, and the idempotency key is
/// recorded, or nothing is. Appends made while others are in flight share one call and one transaction (group
/// commit), each with its own verdict; reads made meanwhile share one query. Global reads are commit-safe (see
/// `PostgresSchema`). All values are bound parameters; only the validated schema name is part of the SQL text.
///
/// The caller owns the client and must keep `client.run()` running while the store is used.
public final class PostgresEventStore: EventStore {
    /// The store's settings.
    public struct Configuration: Sendable {
        /// The schema holding the store's tables: lower-case letters, digits and `_`, at most 63 characters,
        /// not starting with a digit.
        public var schema: String
        /// The largest payload accepted, in bytes.
        public var maximumPayloadBytes: Int
        /// The source of recorded-at times.
        public var now: @Sendable () -> Date
        /// How many appends, and separately how many reads, may be in flight at once, each on a connection of its
        /// own. Appends (reads) that arrive meanwhile wait and then go together, in one round trip: group commit.
        /// A lone append goes at once; a second one in flight waits until it has company (at least two, and as
        /// many as the group in flight), so that a second slot carries groups, not single calls. Values below 1
        /// count as 1.
        public var concurrentRoundTrips: Int
        /// How long a round trip (an append, a read, a lookup; not a migration) may wait for a connection and the
        /// server's answer before it fails with a retryable ``EventStoreError/Code/storeUnavailable`` (an append
        /// that timed out may still commit; its idempotency key tells on a retry). Without it, an answer lost
        /// with a broken connection would hold up every append grouped behind it. Nil waits for ever.
        public var roundTripTimeLimit: Duration?

        /// Creates settings: schema `eventcore`, 1 MiB payloads, the system clock, two groups of appends and two
        /// of reads in flight, 30 s for an answer.
        public init(
            schema: String = "eventcore", maximumPayloadBytes: Int = 1 << 20, now: @escaping @Sendable () -> Date = { Date() },
            concurrentRoundTrips: Int = 2, roundTripTimeLimit: Duration? = .seconds(30)
        ) {
            self.schema = schema
            self.maximumPayloadBytes = maximumPayloadBytes
            self.now = now
            self.concurrentRoundTrips = concurrentRoundTrips
            self.roundTripTimeLimit = roundTripTimeLimit
        }
    }

    /// The settings.
    public let configuration: Configuration
    /// The connection pool.
    public let client: PostgresClient
    private let logger: Logger
    let schema: PostgresSchema
    /// Every round trip goes through it, so none can wait for ever on a connection that died.
    private let roundTrips: ConnectionRoundTrip
    /// Group commit: appends that wait for a free slot go together, as one call of `append_events_batch`.
    private let appendGroups: RoundTripGroup<PendingAppend, AppendResult>
    /// Group reads: reads that wait for a free slot go together, as one query over all their streams.
    private let readGroups: RoundTripGroup<StreamsRead, StreamsSnapshot>
    /// The read of streams after the versions a caller holds (from 0: whole streams), prepared once per connection.
    private let readStatement: StoreStatement.Text
    /// The call of `append_events_batch`, prepared once per connection.
    private let batchStatement: StoreStatement.Text

    /// Creates a store over `client`; call ``migrate()`` (or use ``start(client:configuration:logger:)``) before use.
    ///
    /// - Throws: ``EventStoreError/Code/invalidConfiguration`` for a schema name outside the accepted form.
    public init(client: PostgresClient, configuration: Configuration = Configuration(), logger: Logger = Logger(label: "eventcore.postgres")) throws(EventStoreError) {
        let name = configuration.schema
        let valid = !name.isEmpty && name.utf8.count <= 63
            && name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
            && !("0"..."9").contains(name.unicodeScalars.first!)
        guard valid else {
            throw EventStoreError(.invalidConfiguration, "the schema name must be 1 to 63 lower-case letters, digits or underscores, not starting with a digit")
        }
        guard configuration.maximumPayloadBytes >= 1 else {
            throw EventStoreError(.invalidConfiguration, "the payload limit must be positive")
        }
        self.client = client
        self.roundTrips = ConnectionRoundTrip(client: client, timeLimit: configuration.roundTripTimeLimit)
        self.configuration = configuration
        self.logger = logger
        self.schema = PostgresSchema(name: name)
        let slots = max(1, configuration.concurrentRoundTrips)
        appendGroups = RoundTripGroup(concurrency: slots, maximumCount: 64, maximumWeight: 4 << 20)
        readGroups = RoundTripGroup(concurrency: slots, maximumCount: 64, maximumWeight: 1024)
        // Statement names carry the schema name: one client may serve stores in several schemas.
        readStatement = StoreStatement.Text(name: "eventcore.read_streams_after.\(name)", sql: """
            SELECT e.* FROM unnest($1::text[], $2::int8[]) AS s(id, known) CROSS JOIN LATERAL (
                SELECT \(Self.columns) FROM \(schema.quoted).events
                WHERE stream_id = s.id AND stream_version > s.known ORDER BY stream_version
            ) e
            ORDER BY e.global_position
            """)
        batchStatement = StoreStatement.Text(name: "eventcore.append_events_batch.\(name)", sql: """
            CALL \(schema.quoted).append_events_batch($1::text[], $2::int4[], $3::text[], $4::int8[], $5::int4[], $6::uuid[],
                $7::text[], $8::text[], $9::bytea[], $10::text[], $11::text[], $12::text[], $13::text[], $14::int8[], $15::int8[],
                $16::text[])
            """)
    }

    /// See ``EventStore/preferredExecutor``: the event loop of the connection the store leased last, so that a
    /// command's round trips start where their connection answers. With a client whose event loop group has one
    /// loop, every round trip then runs without a switch of threads.
    public var preferredExecutor: (any TaskExecutor)? { roundTrips.lastLoop }

    /// Creates a store over `client` and migrates its schema.
    public static func start(client: PostgresClient, configuration: Configuration = Configuration(), logger: Logger = Logger(label: "eventcore.postgres")) async throws -> PostgresEventStore {
        let store = try PostgresEventStore(client: client, configuration: configuration, logger: logger)
        try await store.migrate()
        return store
    }

    /// Creates the schema if needed and applies the migrations it lacks, in one transaction. Safe to run from
    /// several processes at once: a transaction-level advisory lock lets one migrate while the others wait.
    public func migrate() async throws {
        let migrations = schema.migrations
        let quoted = schema.quoted
        let lockKey = schema.positionLockKey ^ 0x5eed
        let logger = logger
        do {
            try await roundTrips.run(withinTimeLimit: false) { connection in try await connection.withTransaction(logger: logger) { connection in
                try await connection.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
                try await connection.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(quoted)"), logger: logger)
                try await connection.query(PostgresQuery(unsafeSQL: """
                    CREATE TABLE IF NOT EXISTS \(quoted).schema_migrations (
                        version int4 PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
                    """), logger: logger)
                let rows = try await connection.query(PostgresQuery(unsafeSQL: "SELECT coalesce(max(version), 0) FROM \(quoted).schema_migrations"), logger: logger)
                var current = 0
                for try await version in rows.decode(Int32.self) { current = Int(version) }
                for (index, migration) in migrations.enumerated() where index + 1 > current {
                    for statement in migration {
                        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                    }
                    try await connection.query(PostgresQuery(unsafeSQL: "INSERT INTO \(quoted).schema_migrations (version) VALUES ($1)", binds: Self.binds(Int32(index + 1))), logger: logger)
                }
            } }
        } catch {
            throw Self.mapError(error, "the schema could not be migrated")
        }
    }

    private static func binds(_ value: Int32) -> PostgresBindings {
        var bindings = PostgresBindings()
        bindings.append(value)
        return bindings
    }

    // MARK: Reading

    private var columns: String { Self.columns }

    private static var columns: String {
        """
        global_position, event_id, stream_id, stream_version, event_type, payload,
        correlation_id, causation_id, source_message_id, traceparent, recorded_at_us
        """
    }

    /// See ``EventStore/read(_:)``.
    ///
    /// Reads that arrive while ``Configuration/concurrentRoundTrips`` reads are in flight go together, as one
    /// query over all their streams, each answered from that query's snapshot.
    public func read(_ streams: [StreamID]) async throws -> StreamsSnapshot {
        try await read(streams, after: [:])
    }

    /// See ``EventStore/read(_:after:)``: only the newer events cross the network. Grouped like ``read(_:)``.
    public func read(_ streams: [StreamID], after knownVersions: [StreamID: Int]) async throws -> StreamsSnapshot {
        var unique: [StreamID] = []
        for stream in streams where !unique.contains(stream) { unique.append(stream) }
        guard !unique.isEmpty else { return StreamsSnapshot(events: [], versions: [:]) }
        let request = StreamsRead(streams: unique, known: knownVersions)
        return try await readGroups.submit(request, weight: unique.count) { [self] group in await readGroup(group) }
    }

    /// Reads the streams of every request in `group` in one query, each stream from the lowest version a request
    /// of the group does not hold, and gives each request its own snapshot.
    private func readGroup(_ group: [StreamsRead]) async -> [Result<StreamsSnapshot, any Error>] {
        var all: [StreamID] = []
        var lowest: [StreamID: Int] = [:]
        for request in group {
            for stream in request.streams {
                let known = request.known[stream] ?? 0
                if let held = lowest[stream] {
                    lowest[stream] = min(held, known)
                } else {
                    lowest[stream] = known
                    all.append(stream)
                }
            }
        }
        let events: [StoredEvent]
        do {
            var bindings = PostgresBindings()
            bindings.append(all.map(\.rawValue))
            bindings.append(all.map { Int64(lowest[$0] ?? 0) })
            let rows: [PostgresRow]
            do {
                rows = try await runPrepared(readStatement, bindings, retryingClosedConnection: true)
            } catch {
                throw Self.mapError(error, "events could not be read")
            }
            events = try rows.map(Self.decode)
        } catch {
            return group.map { _ in .failure(error) }
        }
        return group.map { .success($0.snapshot(from: events)) }
    }

    /// See ``EventStore/readAll(after:limit:)``.
    public func readAll(after position: Int, limit: Int) async throws -> [StoredEvent] {
        try EventQuery.validateWindow(after: position, limit: limit)
        return try await readEvents(EventQuery(afterPosition: position, limit: limit))
    }

    /// See ``EventStore/events(matching:)``.
    public func events(matching query: EventQuery) async throws -> [StoredEvent] {
        try query.validate()
        return try await readEvents(query)
    }

    private func readEvents(_ query: EventQuery) async throws -> [StoredEvent] {
        let from = query.recordedFrom.map(RecordedTime.microseconds) ?? Int64.min
        let before = query.recordedBefore.map(RecordedTime.microseconds) ?? Int64.max
        return try await fetch("""
            SELECT \(unescaped: columns) FROM \(unescaped: schema.quoted).read_events(
                \(Int64(query.afterPosition)), \(Int64(query.limit)), \(query.eventTypes)::text[], \(from), \(before))
            """)
    }

    /// See ``EventStore/appendResult(forIdempotencyKey:)``.
    public func appendResult(forIdempotencyKey key: IdempotencyKey) async throws -> AppendResult? {
        let rows: [(Int64?, Int64?, String)]
        do {
            rows = try await runReading("""
                SELECT first_position, last_position, stream_versions FROM \(unescaped: schema.quoted).idempotency_keys
                WHERE idempotency_key = \(key.rawValue)
                """).map { try $0.decode((Int64?, Int64?, String).self) }
        } catch {
            throw Self.mapError(error, "an idempotency key could not be looked up")
        }
        guard let (first, last, versions) = rows.first else { return nil }
        return try await recordedResult(first: first, last: last, versions: versions)
    }

    private func recordedResult(first: Int64?, last: Int64?, versions: String) async throws -> AppendResult {
        var events: [StoredEvent] = []
        if let first, let last {
            events = try await fetch("""
                SELECT \(unescaped: columns) FROM \(unescaped: schema.quoted).events
                WHERE global_position BETWEEN \(first) AND \(last) ORDER BY global_position
                """)
        }
        return AppendResult(outcome: .duplicate, events: events, streamVersions: try StreamVersionsCoding.decode(versions))
    }

    private func fetch(_ query: PostgresQuery) async throws -> [StoredEvent] {
        let rows: [PostgresRow]
        do {
            rows = try await runReading(query)
        } catch {
            throw Self.mapError(error, "events could not be read")
        }
        return try rows.map(Self.decode)
    }

    /// Runs a read-only `query`; a read that meets a connection the server has just closed (the pool can hand
    /// one out before it has noticed) runs once more on another connection. Appends are never run twice here:
    /// whether a lost append committed is for the caller's idempotency key to tell.
    private func runReading(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await readingAgainOnClosedConnection { try await self.run(query) }
    }

    /// Runs the read `attempt`, and once more if it met a connection the server had just closed.
    private func readingAgainOnClosedConnection(_ attempt: @Sendable () async throws -> [PostgresRow]) async throws -> [PostgresRow] {
        do {
            return try await attempt()
        } catch let error as PSQLError where [.serverClosedConnection, .clientClosedConnection, .uncleanShutdown].contains(error.code) {
            logger.debug("a read met a closed connection; reading again", metadata: ["error": "\(error.code)"])
            return try await attempt()
        } catch let error as ConnectionRoundTrip.ConnectionLost {
            logger.debug("a read met a closed connection; reading again", metadata: ["error": "\(error)"])
            return try await attempt()
        }
    }

    /// Runs the prepared statement `text` with `bindings` on a leased connection and collects its rows. The
    /// statement is prepared once per connection, under its own name, and executed by name after that, so the
    /// server parses and plans it once per connection instead of on every call. A read that meets a connection
    /// the server has just closed runs once more, as in ``runReading(_:)``.
    private func runPrepared(_ text: StoreStatement.Text, _ bindings: PostgresBindings, retryingClosedConnection: Bool) async throws -> [PostgresRow] {
        let logger = logger
        let attempt = { @Sendable () async throws -> [PostgresRow] in
            try await self.roundTrips.run { connection in
                try await StoreStatement.$text.withValue(text) {
                    var rows: [PostgresRow] = []
                    for try await row in try await connection.execute(StoreStatement(bindings: bindings), logger: logger) {
                        rows.append(row)
                    }
                    return rows
                }
            }
        }
        return try await retryingClosedConnection ? readingAgainOnClosedConnection(attempt) : attempt()
    }

    /// Runs `query` on a leased connection and collects its rows. The lease is tied to this scope rather than to
    /// the row sequence, so a statement that fails on the server always gives its connection back to the pool.
    private func run(_ query: PostgresQuery) async throws -> [PostgresRow] {
        let logger = logger
        return try await roundTrips.run { connection in
            try await connection.query(query, logger: logger).collect()
        }
    }

    static func decode(_ row: PostgresRow) throws(EventStoreError) -> StoredEvent {
        // The common case in one pass over the row; the slower path below names what is wrong.
        if let (position, uuid, streamText, version, type, payload, correlation, causation, source, traceparent, recordedAt) = try? row.decode(
            (Int64, UUID, String, Int64, String, ByteBuffer, String?, String?, String?, String?, Int64).self
        ), version >= 1, !type.isEmpty, let stream = try? StreamID(streamText) {
            return StoredEvent(
                id: EventID(uuid: uuid), streamID: stream, streamVersion: Int(version), globalPosition: Int(position),
                eventType: type, payload: Data(payload.readableBytesView),
                metadata: EventMetadata(correlationID: correlation, causationID: causation, sourceMessageID: source, traceparent: traceparent),
                recordedAt: RecordedTime.date(microseconds: recordedAt)
            )
        }
        let cells = PostgresRandomAccessRow(row)
        let position = try? cells[0].decode(Int64.self)
        func corrupted(_ what: String) -> EventStoreError {
            EventStoreError(.corruptedRecord, "the stored event's \(what) cannot be read", globalPosition: position.map(Int.init))
        }
        guard let position else { throw corrupted("position") }
        guard let uuid = try? cells[1].decode(UUID.self) else { throw corrupted("event id") }
        guard let streamText = try? cells[2].decode(String.self), let stream = try? StreamID(streamText) else { throw corrupted("stream id") }
        guard let version = try? cells[3].decode(Int64.self), version >= 1 else { throw corrupted("stream version") }
        guard let type = try? cells[4].decode(String.self), !type.isEmpty else { throw corrupted("event type") }
        guard let payload = try? cells[5].decode(ByteBuffer.self) else { throw corrupted("payload") }
        guard let recordedAt = try? cells[10].decode(Int64.self) else { throw corrupted("recorded-at time") }
        let metadata = EventMetadata(
            correlationID: try? cells[6].decode(String?.self),
            causationID: try? cells[7].decode(String?.self),
            sourceMessageID: try? cells[8].decode(String?.self),
            traceparent: try? cells[9].decode(String?.self)
        )
        return StoredEvent(
            id: EventID(uuid: uuid), streamID: stream, streamVersion: Int(version), globalPosition: Int(position),
            eventType: type, payload: Data(payload.readableBytesView), metadata: metadata,
            recordedAt: RecordedTime.date(microseconds: recordedAt)
        )
    }

    // MARK: Appending

    /// The statement of one append as a call of the schema's `append_events` function, which leaves the commit
    /// to the caller's transaction (tests use it to hold a commit back).
    func appendStatement(_ request: AppendRequest, recordedAt: Int64) -> PostgresQuery {
        appendCall(request, recordedAt: recordedAt, committing: false)
    }

    private func appendCall(_ request: AppendRequest, recordedAt: Int64, committing: Bool) -> PostgresQuery {
        let streams = request.streams
        let streamIDs = streams.map(\.rawValue)
        let expected = streams.map { Int64(request.expectations[$0]?.exactVersion ?? -1) }
        let events = request.events
        let ids = events.map(\.id.uuid)
        let eventStreams = events.map(\.streamID.rawValue)
        let types = events.map(\.eventType)
        let payloads = events.map { ByteBuffer(bytes: $0.payload) }
        let correlation = events.map { $0.metadata.correlationID ?? "" }
        let causation = events.map { $0.metadata.causationID ?? "" }
        let source = events.map { $0.metadata.sourceMessageID ?? "" }
        let traceparent = events.map { $0.metadata.traceparent ?? "" }
        let key = request.idempotencyKey?.rawValue ?? ""
        let call = committing
            ? "CALL \(schema.quoted).append_events_committed("
            : "SELECT outcome, first_position, last_position, versions, recorded_versions FROM \(schema.quoted).append_events("
        return """
            \(unescaped: call)
                \(streamIDs)::text[], \(expected)::int8[], \(ids)::uuid[], \(eventStreams)::text[], \(types)::text[],
                \(payloads)::bytea[], \(correlation)::text[], \(causation)::text[], \(source)::text[], \(traceparent)::text[],
                \(recordedAt), \(key))
            """
    }

    /// See ``EventStore/append(_:)``.
    ///
    /// Group commit: an append that arrives while ``Configuration/concurrentRoundTrips`` batches are in flight
    /// waits and goes with the appends that gathered meanwhile, as one call of `append_events_batch` (one round trip,
    /// one transaction, one WAL flush). Each append still gets its own verdict; an append that finds no batch in
    /// flight goes at once, so a lone append never waits for company.
    public func append(_ request: AppendRequest) async throws -> AppendResult {
        try request.validate(maximumPayloadBytes: configuration.maximumPayloadBytes)
        let pending = PendingAppend(request: request, recordedAt: RecordedTime.microseconds(configuration.now()))
        return try await appendGroups.submit(pending, weight: pending.payloadBytes) { [self] batch in await runBatch(batch) }
    }

    /// How many appends are waiting for the next batch.
    var waitingAppends: Int { appendGroups.waiting }

    /// Runs `batch` as one call of `append_events_batch`; if the server refuses the batch as a whole, which rolls it
    /// back, the appends run one by one so that each gets its own answer.
    private func runBatch(_ batch: [PendingAppend]) async -> [Result<AppendResult, any Error>] {
        let row: ([Int32], Int64?, [Int32], [Int64])?
        do {
            row = try await runPrepared(batchStatement, batchBindings(batch), retryingClosedConnection: false).first.map { try $0.decode(([Int32], Int64?, [Int32], [Int64]).self) }
        } catch let error as PSQLError where Self.rolledBack(error) {
            logger.debug("an append batch was refused as a whole; appending one by one", metadata: ["error": "\(error.serverInfo?[.message] ?? "")"])
            var results: [Result<AppendResult, any Error>] = []
            for entry in batch {
                do {
                    results.append(.success(try await appendAlone(entry.request, recordedAt: entry.recordedAt)))
                } catch {
                    results.append(.failure(error))
                }
            }
            return results
        } catch {
            let mapped = Self.mapAppendError(error)
            return batch.map { _ in .failure(mapped) }
        }
        guard let (outcomes, first, offsets, versions) = row, outcomes.count == batch.count, offsets.count == batch.count,
              versions.count == batch.reduce(0, { $0 + $1.streams.count })
        else {
            let failure = EventStoreError(.storeFailure, "the append batch returned no usable answer; its appends may have committed")
            return batch.map { _ in .failure(failure) }
        }
        var results: [Result<AppendResult, any Error>] = []
        results.reserveCapacity(batch.count)
        var versionIndex = 0
        for (index, entry) in batch.enumerated() {
            let streams = entry.streams
            let before = versions[versionIndex..<(versionIndex + streams.count)].map(Int.init)
            versionIndex += streams.count
            switch outcomes[index] {
            case 0:
                results.append(.success(Self.committed(
                    entry.request, streams: streams, versionsBefore: before,
                    firstPosition: Int(first ?? 0) + Int(offsets[index]), recordedAt: entry.recordedAt
                )))
            case 1:
                do {
                    guard let key = entry.request.idempotencyKey, let recorded = try await appendResult(forIdempotencyKey: key) else {
                        throw EventStoreError(.storeFailure, "a duplicate idempotency key was reported but its record cannot be found")
                    }
                    results.append(.success(recorded))
                } catch {
                    results.append(.failure(error))
                }
            default:
                let actual = Dictionary(uniqueKeysWithValues: zip(streams, before))
                results.append(.failure(entry.request.conflict(actualVersions: actual)
                    ?? EventStoreError(.versionConflict, "the store reported a version conflict")))
            }
        }
        return results
    }

    /// Whether a server error means the whole batch rolled back before its commit, so that running its appends
    /// again, one by one, cannot write anything twice: the errors the append raises itself, a stored event id
    /// or stream version, a deadlock, a value too large. Anything else (a lost connection, a cancelled or
    /// terminated backend, which can happen after the commit) is reported as it is.
    private static func rolledBack(_ error: PSQLError) -> Bool {
        guard error.code == .server, error.serverInfo?[.severity] == "ERROR" else { return false }
        return ["P0001", "23505", "40P01", "40001", "22001", "54000"].contains(error.serverInfo?[.sqlState] ?? "")
    }

    private func batchBindings(_ batch: [PendingAppend]) -> PostgresBindings {
        var batchStreams: [String] = [], seen = Set<StreamID>()
        var streamCounts: [Int32] = [], streams: [String] = [], expected: [Int64] = []
        var eventCounts: [Int32] = [], ids: [UUID] = [], eventStreams: [String] = [], types: [String] = []
        var payloads: [ByteBuffer] = [], correlation: [String] = [], causation: [String] = [], source: [String] = []
        var traceparent: [String] = [], eventRecordedAt: [Int64] = [], recordedAt: [Int64] = [], keys: [String] = []
        for entry in batch {
            let request = entry.request
            streamCounts.append(Int32(entry.streams.count))
            for stream in entry.streams {
                if seen.insert(stream).inserted { batchStreams.append(stream.rawValue) }
                streams.append(stream.rawValue)
                expected.append(Int64(request.expectations[stream]?.exactVersion ?? -1))
            }
            eventCounts.append(Int32(request.events.count))
            for event in request.events {
                ids.append(event.id.uuid)
                eventStreams.append(event.streamID.rawValue)
                types.append(event.eventType)
                payloads.append(ByteBuffer(bytes: event.payload))
                correlation.append(event.metadata.correlationID ?? "")
                causation.append(event.metadata.causationID ?? "")
                source.append(event.metadata.sourceMessageID ?? "")
                traceparent.append(event.metadata.traceparent ?? "")
                eventRecordedAt.append(entry.recordedAt)
            }
            recordedAt.append(entry.recordedAt)
            keys.append(request.idempotencyKey?.rawValue ?? "")
        }
        var bindings = PostgresBindings()
        bindings.append(batchStreams)
        bindings.append(streamCounts)
        bindings.append(streams)
        bindings.append(expected)
        bindings.append(eventCounts)
        bindings.append(ids)
        bindings.append(eventStreams)
        bindings.append(types)
        bindings.append(payloads)
        bindings.append(correlation)
        bindings.append(causation)
        bindings.append(source)
        bindings.append(traceparent)
        bindings.append(eventRecordedAt)
        bindings.append(recordedAt)
        bindings.append(keys)
        return bindings
    }

    /// One append alone, through `append_events_committed`: the path of appends a batch could not judge.
    private func appendAlone(_ request: AppendRequest, recordedAt: Int64) async throws -> AppendResult {
        let returned: (String, Int64?, Int64?, [Int64]?, String?)?
        do {
            returned = try await run(appendCall(request, recordedAt: recordedAt, committing: true))
                .first.map { try $0.decode((String, Int64?, Int64?, [Int64]?, String?).self) }
        } catch let error as PSQLError where error.serverInfo?[.message] == "eventcore: duplicate" {
            guard let key = request.idempotencyKey, let recorded = try await appendResult(forIdempotencyKey: key) else {
                throw EventStoreError(.storeFailure, "a duplicate idempotency key was reported but its record cannot be found")
            }
            return recorded
        } catch let error as PSQLError where error.serverInfo?[.message] == "eventcore: version conflict" {
            let detail = error.serverInfo?[.detail] ?? ""
            let actual = detail.split(separator: ",").compactMap { Int($0) }
            let streams = request.streams
            let versions = Dictionary(uniqueKeysWithValues: zip(streams, actual + Array(repeating: 0, count: max(0, streams.count - actual.count))))
            throw request.conflict(actualVersions: versions)
                ?? EventStoreError(.versionConflict, "the store reported a version conflict", underlying: error)
        } catch {
            throw Self.mapAppendError(error)
        }

        guard let (outcome, first, last, versions, recordedVersions) = returned else {
            throw EventStoreError(.storeFailure, "the append function returned no row")
        }
        if outcome == "duplicate" {
            return try await recordedResult(first: first, last: last, versions: recordedVersions ?? "{}")
        }
        return Self.committed(
            request, streams: request.streams, versionsBefore: (versions ?? []).map(Int.init),
            firstPosition: Int(first ?? 0), recordedAt: recordedAt
        )
    }

    /// The result of a committed append, from each stream's version before it and its first position.
    private static func committed(
        _ request: AppendRequest, streams: [StreamID], versionsBefore: [Int], firstPosition: Int, recordedAt: Int64
    ) -> AppendResult {
        var current = Dictionary(uniqueKeysWithValues: zip(streams, versionsBefore))
        var stored: [StoredEvent] = []
        stored.reserveCapacity(request.events.count)
        let recordedDate = RecordedTime.date(microseconds: recordedAt)
        for (offset, event) in request.events.enumerated() {
            let version = current[event.streamID, default: 0] + 1
            current[event.streamID] = version
            stored.append(StoredEvent(
                id: event.id, streamID: event.streamID, streamVersion: version, globalPosition: firstPosition + offset,
                eventType: event.eventType, payload: event.payload, metadata: event.metadata.normalized, recordedAt: recordedDate
            ))
        }
        return AppendResult(outcome: .committed, events: stored, streamVersions: current)
    }

    // MARK: Errors

    /// The error of an append that failed without a verdict: one that got no answer in time may still commit.
    static func mapAppendError(_ error: any Error) -> EventStoreError {
        if let timedOut = error as? ConnectionRoundTrip.TimedOut {
            return EventStoreError(.storeUnavailable, "\(timedOut) to an append; it may still commit, and a retry with the same idempotency key tells", underlying: error)
        }
        return mapError(error, "the append failed; nothing was written unless the connection broke during commit")
    }

    static func mapError(_ error: any Error, _ message: String) -> EventStoreError {
        if let error = error as? EventStoreError { return error }
        if error is ConnectionRoundTrip.ConnectionLost {
            return EventStoreError(.storeUnavailable, "\(message) (the connection to the database was lost)", underlying: error)
        }
        if let timedOut = error as? ConnectionRoundTrip.TimedOut {
            return EventStoreError(.storeUnavailable, "\(message): \(timedOut), and the request may still take effect", underlying: error)
        }
        if let transactionError = error as? PostgresTransactionError {
            if let cause = transactionError.closureError ?? transactionError.beginError ?? transactionError.commitError {
                return mapError(cause, message)
            }
            return EventStoreError(.storeUnavailable, message, underlying: error)
        }
        guard let psqlError = error as? PSQLError else {
            return EventStoreError(.storeUnavailable, message, underlying: error)
        }
        switch psqlError.code {
        case .server:
            let state = psqlError.serverInfo?[.sqlState] ?? ""
            switch state {
            case "40P01", "40001":
                return EventStoreError(.versionConflict, "concurrent appends collided; retrying resolves it", underlying: error)
            case "23505":
                return EventStoreError(.invalidRequest, "the append collides with a stored event (an event id or stream version is already taken)", underlying: error)
            case "22001", "54000":
                return EventStoreError(.invalidRequest, "a value is too large for the store", underlying: error)
            default:
                // Class 08 (connection), 53 (resources), 57 (operator intervention) are transient.
                if state.hasPrefix("08") || state.hasPrefix("53") || state.hasPrefix("57") {
                    return EventStoreError(.storeUnavailable, "\(message) (server state \(state))", underlying: error)
                }
                return EventStoreError(.storeFailure, "\(message) (server state \(state))", underlying: error)
            }
        case .serverClosedConnection, .clientClosedConnection, .connectionError, .poolClosed, .uncleanShutdown, .queryCancelled:
            return EventStoreError(.storeUnavailable, "\(message) (the connection to the database was lost)", underlying: error)
        default:
            return EventStoreError(.storeFailure, message, underlying: error)
        }
    }
}

/// An append on its way to `append_events_batch`.
struct PendingAppend: Sendable {
    var request: AppendRequest
    /// The streams the request names, in the order the batch call lists them.
    var streams: [StreamID]
    var recordedAt: Int64

    init(request: AppendRequest, recordedAt: Int64) {
        self.request = request
        self.streams = request.streams
        self.recordedAt = recordedAt
    }

    var payloadBytes: Int { request.events.reduce(0) { $0 + $1.payload.count } }
}

/// A statement of the store run as a prepared statement. PostgresNIO names and prepares a statement from its
/// type's static `name` and `sql`, read when the statement is executed; the store's statements depend on its
/// schema, so each execution supplies them through the task-local ``text``.
struct StoreStatement: PostgresPreparedStatement {
    /// The name and text of a statement.
    struct Text: Sendable {
        var name: String
        var sql: String
    }

    /// The statement being executed. Outside an execution it names a statement that fails, never a wrong one.
    @TaskLocal static var text = Text(name: "eventcore.unset", sql: "SELECT 'no statement text was supplied'::int4")

    static var name: String { text.name }
    static var sql: String { text.sql }

    typealias Row = PostgresRow

    var bindings: PostgresBindings

    func makeBindings() throws -> PostgresBindings { bindings }
    func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }
}

/// One caller's read: its streams, and the version up to which it holds each (absent: none of it).
struct StreamsRead: Sendable {
    var streams: [StreamID]
    var known: [StreamID: Int]

    /// This read's answer from the events a (possibly grouped) query returned: the events of its streams it does
    /// not hold, and each stream's version (what it holds if nothing newer came).
    func snapshot(from events: [StoredEvent]) -> StreamsSnapshot {
        var versions: [StreamID: Int] = [:]
        for stream in streams { versions[stream] = known[stream] ?? 0 }
        var mine: [StoredEvent] = []
        mine.reserveCapacity(events.count)
        for event in events {
            guard let held = versions[event.streamID] else { continue }
            if event.streamVersion > (known[event.streamID] ?? 0) { mine.append(event) }
            if event.streamVersion > held { versions[event.streamID] = event.streamVersion }
        }
        return StreamsSnapshot(events: mine, versions: versions)
    }
}
