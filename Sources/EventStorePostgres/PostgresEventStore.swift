import EventCore
import Foundation
import Logging
import PostgresNIO

/// The event store shared by a fleet: PostgreSQL through a `PostgresClient` connection pool.
///
/// Everything lives in one schema (``Configuration/schema``), created and migrated by ``migrate()``, which
/// ``start(client:configuration:logger:)`` runs. An append is one call of a server-side function, so it costs
/// one round trip and commits atomically: stream rows are locked in id order (no deadlocks between appends),
/// every expected version is checked under those locks, events are inserted, and the idempotency key is
/// recorded, or nothing is. Global reads are commit-safe (see `PostgresSchema`). All values are bound
/// parameters; only the validated schema name is part of the SQL text.
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

        /// Creates settings: schema `eventcore`, 1 MiB payloads, the system clock.
        public init(schema: String = "eventcore", maximumPayloadBytes: Int = 1 << 20, now: @escaping @Sendable () -> Date = { Date() }) {
            self.schema = schema
            self.maximumPayloadBytes = maximumPayloadBytes
            self.now = now
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
        self.roundTrips = ConnectionRoundTrip(client: client)
        self.configuration = configuration
        self.logger = logger
        self.schema = PostgresSchema(name: name)
    }

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
            try await roundTrips.run { connection in try await connection.withTransaction(logger: logger) { connection in
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

    private var columns: String {
        """
        global_position, event_id, stream_id, stream_version, event_type, payload,
        correlation_id, causation_id, source_message_id, traceparent, recorded_at_us
        """
    }

    /// See ``EventStore/read(_:)``.
    public func read(_ streams: [StreamID]) async throws -> StreamsSnapshot {
        var unique: [StreamID] = []
        for stream in streams where !unique.contains(stream) { unique.append(stream) }
        guard !unique.isEmpty else { return StreamsSnapshot(events: [], versions: [:]) }
        let ids = unique.map(\.rawValue)
        let events = try await fetch(
            "SELECT \(unescaped: columns) FROM \(unescaped: schema.quoted).events WHERE stream_id = ANY(\(ids)) ORDER BY global_position"
        )
        var versions = Dictionary(uniqueKeysWithValues: unique.map { ($0, 0) })
        for event in events { versions[event.streamID] = event.streamVersion }
        return StreamsSnapshot(events: events, versions: versions)
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
        do {
            return try await run(query)
        } catch let error as PSQLError where [.serverClosedConnection, .clientClosedConnection, .uncleanShutdown].contains(error.code) {
            logger.debug("a read met a closed connection; reading again", metadata: ["error": "\(error.code)"])
            return try await run(query)
        } catch let error as ConnectionRoundTrip.ConnectionLost {
            logger.debug("a read met a closed connection; reading again", metadata: ["error": "\(error)"])
            return try await run(query)
        }
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
    public func append(_ request: AppendRequest) async throws -> AppendResult {
        try request.validate(maximumPayloadBytes: configuration.maximumPayloadBytes)
        let recordedAt = RecordedTime.microseconds(configuration.now())
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
            throw Self.mapError(error, "the append failed; nothing was written unless the connection broke during commit")
        }

        guard let (outcome, first, last, versions, recordedVersions) = returned else {
            throw EventStoreError(.storeFailure, "the append function returned no row")
        }
        if outcome == "duplicate" {
            return try await recordedResult(first: first, last: last, versions: recordedVersions ?? "{}")
        }
        let streams = request.streams
        var current = Dictionary(uniqueKeysWithValues: zip(streams, (versions ?? []).map(Int.init)))
        var stored: [StoredEvent] = []
        stored.reserveCapacity(request.events.count)
        let firstPosition = Int(first ?? 0)
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

    static func mapError(_ error: any Error, _ message: String) -> EventStoreError {
        if let error = error as? EventStoreError { return error }
        if error is ConnectionRoundTrip.ConnectionLost {
            return EventStoreError(.storeUnavailable, "\(message) (the connection to the database was lost)", underlying: error)
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
