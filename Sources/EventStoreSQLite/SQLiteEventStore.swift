// The embedded default store. It goes through SQLiteNIO rather than the system libsqlite3: the package already
// depends on it, it vendors one known SQLite version (so developers, CI and containers need no system library),
// and it runs every blocking SQLite call on an NIO thread pool, off the cooperative pool.

import EventCore
import Foundation
import Logging
import SQLiteNIO
import Synchronization

/// An event store in one SQLite file: WAL journal, a busy timeout, one writer connection and several readers.
///
/// Safe across processes on one machine: SQLite serialises writers with `BEGIN IMMEDIATE`, so global positions
/// (an `AUTOINCREMENT` key assigned inside the write transaction) are in commit order and a tailing reader never
/// skips a late commit. Within a process, appends queue for the writer connection while reads run beside them.
/// Call ``close()`` when done.
public final class SQLiteEventStore: EventStore {
    /// The store's settings.
    public struct Configuration: Sendable {
        /// How hard SQLite makes sure a commit survives a power cut.
        public enum Durability: String, Sendable {
            /// `synchronous=FULL`: every commit is on disk before it returns.
            case full = "FULL"
            /// `synchronous=NORMAL`: the database never corrupts, but the last commits may be lost on power loss.
            case normal = "NORMAL"
        }

        /// The database file; created if missing.
        public var path: String
        /// The largest payload accepted, in bytes.
        public var maximumPayloadBytes: Int
        /// How long to wait for another process's write lock before failing with `storeUnavailable`.
        public var busyTimeout: Duration
        /// How many connections serve reads.
        public var readerConnections: Int
        /// Commit durability.
        public var durability: Durability
        /// The source of recorded-at times.
        public var now: @Sendable () -> Date

        /// Creates settings with defaults: 1 MiB payloads, 10 s busy timeout, 4 readers, full durability.
        public init(
            path: String,
            maximumPayloadBytes: Int = 1 << 20,
            busyTimeout: Duration = .seconds(10),
            readerConnections: Int = 4,
            durability: Durability = .full,
            now: @escaping @Sendable () -> Date = { Date() }
        ) {
            self.path = path
            self.maximumPayloadBytes = maximumPayloadBytes
            self.busyTimeout = busyTimeout
            self.readerConnections = readerConnections
            self.durability = durability
            self.now = now
        }
    }

    /// The settings.
    public let configuration: Configuration
    private let threadPool: NIOThreadPool
    private let writer: SQLiteConnection
    private let readers: [SQLiteConnection]
    private let readerLocks: [AsyncLock]
    private let writeLock = AsyncLock()
    private let nextReader = Counter()

    private init(configuration: Configuration, threadPool: NIOThreadPool, writer: SQLiteConnection, readers: [SQLiteConnection]) {
        self.configuration = configuration
        self.threadPool = threadPool
        self.writer = writer
        self.readers = readers
        self.readerLocks = readers.map { _ in AsyncLock() }
    }

    /// Opens (creating if needed) the database at `configuration.path` and brings its schema up to date.
    public static func open(_ configuration: Configuration, logger: Logger = Logger(label: "eventcore.sqlite")) async throws -> SQLiteEventStore {
        guard configuration.readerConnections >= 1, configuration.maximumPayloadBytes >= 1 else {
            throw EventStoreError(.invalidConfiguration, "an SQLite store needs at least one reader connection and a positive payload limit")
        }
        // One thread per connection, so a connection waiting on another process's lock never blocks the others.
        let threadPool = NIOThreadPool(numberOfThreads: configuration.readerConnections + 1)
        threadPool.start()
        var opened: [SQLiteConnection] = []
        do {
            let eventLoop = MultiThreadedEventLoopGroup.singleton.any()
            let busyMillis = Int(configuration.busyTimeout.components.seconds * 1000 + configuration.busyTimeout.components.attoseconds / 1_000_000_000_000_000)
            for _ in 0...configuration.readerConnections {
                let connection = try await SQLiteConnection.open(storage: .file(path: configuration.path), threadPool: threadPool, logger: logger, on: eventLoop)
                opened.append(connection)
                // Replaces the connection's default busy handler with SQLite's sleeping one, bounded by the timeout.
                _ = try await connection.query("PRAGMA busy_timeout = \(max(0, busyMillis))")
            }
            let writer = opened[0]
            try await migrate(writer, durability: configuration.durability)
            for reader in opened.dropFirst() {
                _ = try await reader.query("PRAGMA query_only = ON")
            }
            return SQLiteEventStore(configuration: configuration, threadPool: threadPool, writer: writer, readers: Array(opened.dropFirst()))
        } catch {
            for connection in opened { try? await connection.close() }
            try? await threadPool.shutdownGracefully()
            throw mapError(error, "the SQLite database could not be opened")
        }
    }

    /// Closes every connection and stops the store's threads. The store cannot be used afterwards.
    public func close() async throws {
        try await writeLock.withLock {
            for connection in [writer] + readers { try await connection.close() }
        }
        try await threadPool.shutdownGracefully()
    }

    // MARK: Schema

    static let migrations: [String] = [
        """
        CREATE TABLE events (
            global_position INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            stream_id TEXT NOT NULL,
            stream_version INTEGER NOT NULL,
            event_type TEXT NOT NULL,
            payload BLOB NOT NULL,
            correlation_id TEXT,
            causation_id TEXT,
            source_message_id TEXT,
            traceparent TEXT,
            recorded_at INTEGER NOT NULL,
            UNIQUE (stream_id, stream_version)
        );
        CREATE INDEX events_by_type ON events (event_type, global_position);
        CREATE INDEX events_by_time ON events (recorded_at);
        CREATE TABLE idempotency_keys (
            idempotency_key TEXT PRIMARY KEY,
            first_position INTEGER,
            last_position INTEGER,
            stream_versions TEXT NOT NULL,
            recorded_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
    ]

    private static func migrate(_ writer: SQLiteConnection, durability: Configuration.Durability) async throws {
        _ = try await writer.query("PRAGMA journal_mode = WAL")
        _ = try await writer.query("PRAGMA synchronous = \(durability.rawValue)")
        _ = try await writer.query("BEGIN IMMEDIATE")
        do {
            _ = try await writer.query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            let current = try await writer.query("SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations").first?.column("version")?.integer ?? 0
            for (index, migration) in migrations.enumerated() where index + 1 > current {
                for statement in migration.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespacesAndNewlines) }) where !statement.isEmpty {
                    _ = try await writer.query(statement)
                }
                _ = try await writer.query(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    [.integer(index + 1), .integer(Int(RecordedTime.microseconds(Date())))]
                )
            }
            _ = try await writer.query("COMMIT")
        } catch {
            _ = try? await writer.query("ROLLBACK")
            throw error
        }
    }

    // MARK: Reading

    private static let columns = """
        global_position, event_id, stream_id, stream_version, event_type, payload,
        correlation_id, causation_id, source_message_id, traceparent, recorded_at
        """

    /// Runs `body` on a reader connection that no other query uses meanwhile. A query started on a connection
    /// while another one runs there would share that one's read transaction and see its older snapshot, so
    /// each reader serves one query at a time.
    private func withReader<T: Sendable>(_ body: (SQLiteConnection) async throws -> T) async throws -> T {
        let index = nextReader.next() % readers.count
        return try await readerLocks[index].withLock { try await body(readers[index]) }
    }

    private func readQuery(_ sql: String, _ binds: [SQLiteData]) async throws -> [SQLiteRow] {
        try await withReader { try await query($0, sql, binds) }
    }

    /// See ``EventStore/read(_:)``.
    public func read(_ streams: [StreamID]) async throws -> StreamsSnapshot {
        try await read(streams, after: [:])
    }

    /// See ``EventStore/read(_:after:)``: one query, each stream from the version after the one the caller holds.
    public func read(_ streams: [StreamID], after knownVersions: [StreamID: Int]) async throws -> StreamsSnapshot {
        var unique: [StreamID] = []
        for stream in streams where !unique.contains(stream) { unique.append(stream) }
        guard !unique.isEmpty else { return StreamsSnapshot(events: [], versions: [:]) }
        let conditions = Array(repeating: "(stream_id = ? AND stream_version > ?)", count: unique.count).joined(separator: " OR ")
        let rows = try await readQuery(
            "SELECT \(Self.columns) FROM events WHERE \(conditions) ORDER BY global_position",
            unique.flatMap { [SQLiteData.text($0.rawValue), .integer(knownVersions[$0] ?? 0)] }
        )
        let events = try rows.map(Self.decode)
        var versions = Dictionary(uniqueKeysWithValues: unique.map { ($0, knownVersions[$0] ?? 0) })
        for event in events { versions[event.streamID] = event.streamVersion }
        return StreamsSnapshot(events: events, versions: versions)
    }

    /// See ``EventStore/readAll(after:limit:)``.
    public func readAll(after position: Int, limit: Int) async throws -> [StoredEvent] {
        try EventQuery.validateWindow(after: position, limit: limit)
        let rows = try await readQuery(
            "SELECT \(Self.columns) FROM events WHERE global_position > ? ORDER BY global_position LIMIT ?",
            [.integer(position), .integer(limit)]
        )
        return try rows.map(Self.decode)
    }

    /// See ``EventStore/events(matching:)``.
    public func events(matching query: EventQuery) async throws -> [StoredEvent] {
        try query.validate()
        var conditions = ["global_position > ?"]
        var binds: [SQLiteData] = [.integer(query.afterPosition)]
        if !query.eventTypes.isEmpty {
            conditions.append("event_type IN (\(Array(repeating: "?", count: query.eventTypes.count).joined(separator: ", ")))")
            binds += query.eventTypes.map { .text($0) }
        }
        if let from = query.recordedFrom {
            conditions.append("recorded_at >= ?")
            binds.append(.integer(Int(RecordedTime.microseconds(from))))
        }
        if let before = query.recordedBefore {
            conditions.append("recorded_at < ?")
            binds.append(.integer(Int(RecordedTime.microseconds(before))))
        }
        binds.append(.integer(query.limit))
        let rows = try await self.readQuery(
            "SELECT \(Self.columns) FROM events WHERE \(conditions.joined(separator: " AND ")) ORDER BY global_position LIMIT ?",
            binds
        )
        return try rows.map(Self.decode)
    }

    /// See ``EventStore/appendResult(forIdempotencyKey:)``.
    public func appendResult(forIdempotencyKey key: IdempotencyKey) async throws -> AppendResult? {
        try await withReader { try await self.recordedResult(for: key, on: $0) }
    }

    private func recordedResult(for key: IdempotencyKey, on connection: SQLiteConnection) async throws -> AppendResult? {
        let rows = try await query(
            connection,
            "SELECT first_position, last_position, stream_versions FROM idempotency_keys WHERE idempotency_key = ?",
            [.text(key.rawValue)]
        )
        guard let row = rows.first else { return nil }
        var events: [StoredEvent] = []
        if let first = row.column("first_position")?.integer, let last = row.column("last_position")?.integer {
            events = try await query(
                connection,
                "SELECT \(Self.columns) FROM events WHERE global_position BETWEEN ? AND ? ORDER BY global_position",
                [.integer(first), .integer(last)]
            ).map(Self.decode)
        }
        let versions = try StreamVersionsCoding.decode(row.column("stream_versions")?.string ?? "")
        return AppendResult(outcome: .duplicate, events: events, streamVersions: versions)
    }

    // MARK: Appending

    /// See ``EventStore/append(_:)``.
    public func append(_ request: AppendRequest) async throws -> AppendResult {
        try request.validate(maximumPayloadBytes: configuration.maximumPayloadBytes)
        let recordedAt = RecordedTime.microseconds(configuration.now())
        return try await writeLock.withLock {
            _ = try await query(writer, "BEGIN IMMEDIATE", [])
            do {
                let result = try await appendInTransaction(request, recordedAt: recordedAt)
                _ = try await query(writer, "COMMIT", [])
                return result
            } catch {
                _ = try? await writer.query("ROLLBACK")
                throw error
            }
        }
    }

    private func appendInTransaction(_ request: AppendRequest, recordedAt: Int64) async throws -> AppendResult {
        if let key = request.idempotencyKey, let recorded = try await recordedResult(for: key, on: writer) {
            return recorded
        }
        let streams = request.streams
        var actual = Dictionary(uniqueKeysWithValues: streams.map { ($0, 0) })
        if !streams.isEmpty {
            let rows = try await query(
                writer,
                "SELECT stream_id, MAX(stream_version) AS version FROM events WHERE stream_id IN (\(Array(repeating: "?", count: streams.count).joined(separator: ", "))) GROUP BY stream_id",
                streams.map { .text($0.rawValue) }
            )
            for row in rows {
                guard let text = row.column("stream_id")?.string, let stream = try? StreamID(text), let version = row.column("version")?.integer else {
                    throw EventStoreError(.corruptedRecord, "a stream version row could not be read")
                }
                actual[stream] = version
            }
        }
        if let conflict = request.conflict(actualVersions: actual) { throw conflict }

        var stored: [StoredEvent] = []
        stored.reserveCapacity(request.events.count)
        var versions = actual
        var pending: [StoredEvent] = []
        for event in request.events {
            let version = versions[event.streamID, default: 0] + 1
            versions[event.streamID] = version
            pending.append(StoredEvent(
                id: event.id, streamID: event.streamID, streamVersion: version, globalPosition: 0,
                eventType: event.eventType, payload: event.payload, metadata: event.metadata.normalized,
                recordedAt: RecordedTime.date(microseconds: recordedAt)
            ))
        }
        let rowsPerStatement = 500
        var start = 0
        while start < pending.count {
            let chunk = pending[start..<min(pending.count, start + rowsPerStatement)]
            var binds: [SQLiteData] = []
            binds.reserveCapacity(chunk.count * 10)
            for event in chunk {
                binds += [
                    .text(event.id.description), .text(event.streamID.rawValue), .integer(event.streamVersion),
                    .text(event.eventType), .blob(ByteBuffer(bytes: event.payload)),
                    Self.text(event.metadata.correlationID), Self.text(event.metadata.causationID),
                    Self.text(event.metadata.sourceMessageID), Self.text(event.metadata.traceparent),
                    .integer(Int(recordedAt)),
                ]
            }
            let values = Array(repeating: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", count: chunk.count).joined(separator: ", ")
            let rows = try await query(
                writer,
                """
                INSERT INTO events (event_id, stream_id, stream_version, event_type, payload,
                    correlation_id, causation_id, source_message_id, traceparent, recorded_at)
                VALUES \(values) RETURNING global_position, event_id
                """,
                binds
            )
            var positions: [String: Int] = [:]
            for row in rows {
                if let id = row.column("event_id")?.string, let position = row.column("global_position")?.integer { positions[id] = position }
            }
            for var event in chunk {
                guard let position = positions[event.id.description] else {
                    throw EventStoreError(.storeFailure, "the store did not return the position of an inserted event", streamID: event.streamID)
                }
                event.globalPosition = position
                stored.append(event)
            }
            start += rowsPerStatement
        }
        stored.sort { $0.globalPosition < $1.globalPosition }

        if let key = request.idempotencyKey {
            _ = try await query(
                writer,
                "INSERT INTO idempotency_keys (idempotency_key, first_position, last_position, stream_versions, recorded_at) VALUES (?, ?, ?, ?, ?)",
                [
                    .text(key.rawValue),
                    stored.first.map { .integer($0.globalPosition) } ?? .null,
                    stored.last.map { .integer($0.globalPosition) } ?? .null,
                    .text(try StreamVersionsCoding.encode(versions)),
                    .integer(Int(recordedAt)),
                ]
            )
        }
        return AppendResult(outcome: .committed, events: stored, streamVersions: versions)
    }

    // MARK: Rows and errors

    private static func text(_ value: String?) -> SQLiteData {
        value.map { .text($0) } ?? .null
    }

    static func decode(_ row: SQLiteRow) throws(EventStoreError) -> StoredEvent {
        let position = row.column("global_position")?.integer
        func corrupted(_ what: String) -> EventStoreError {
            EventStoreError(.corruptedRecord, "the stored event's \(what) cannot be read", globalPosition: position)
        }
        guard let position else { throw corrupted("position") }
        guard let idText = row.column("event_id")?.string, let id = EventID(uuidString: idText) else { throw corrupted("event id") }
        guard let streamText = row.column("stream_id")?.string, let stream = try? StreamID(streamText) else { throw corrupted("stream id") }
        guard let version = row.column("stream_version")?.integer, version >= 1 else { throw corrupted("stream version") }
        guard let type = row.column("event_type")?.string, !type.isEmpty else { throw corrupted("event type") }
        guard let payload = row.column("payload")?.blob else { throw corrupted("payload") }
        guard let recordedAt = row.column("recorded_at")?.integer else { throw corrupted("recorded-at time") }
        let metadata = EventMetadata(
            correlationID: row.column("correlation_id")?.string,
            causationID: row.column("causation_id")?.string,
            sourceMessageID: row.column("source_message_id")?.string,
            traceparent: row.column("traceparent")?.string
        )
        return StoredEvent(
            id: id, streamID: stream, streamVersion: version, globalPosition: position, eventType: type,
            payload: Data(payload.readableBytesView), metadata: metadata,
            recordedAt: RecordedTime.date(microseconds: Int64(recordedAt))
        )
    }

    private func query(_ connection: SQLiteConnection, _ sql: String, _ binds: [SQLiteData]) async throws -> [SQLiteRow] {
        do {
            return try await connection.query(sql, binds)
        } catch {
            throw Self.mapError(error, "an SQLite statement failed")
        }
    }

    static func mapError(_ error: any Error, _ message: String) -> EventStoreError {
        if let error = error as? EventStoreError { return error }
        guard let sqliteError = error as? SQLiteError else {
            return EventStoreError(.storeUnavailable, message, underlying: error)
        }
        switch sqliteError.reason {
        case .busy, .busyTimeout, .busyInRecovery, .busyInSnapshot, .locked:
            return EventStoreError(.storeUnavailable, "the database stayed locked by another writer beyond the busy timeout", underlying: error)
        case .cantOpen, .cantOpenDirectory, .cantOpenInvalidPath, .ioError, .full, .readOnly, .notADatabase:
            return EventStoreError(.storeUnavailable, "\(message): \(sqliteError.reason)", underlying: error)
        case .constraint, .constraintUniqueFailed, .constraintPrimaryKeyFailed:
            return EventStoreError(.invalidRequest, "the append collides with a stored event (an event id or stream version is already taken)", underlying: error)
        default:
            return EventStoreError(.storeFailure, "\(message): \(sqliteError.reason)", underlying: error)
        }
    }
}

/// A thread-safe round-robin counter.
final class Counter: Sendable {
    private let value = Mutex(0)

    func next() -> Int {
        value.withLock { value in
            value &+= 1
            return value & Int.max
        }
    }
}
