import Foundation
import Synchronization

/// An event store in memory, for unit tests and the embedded test mode. It keeps the full contract of
/// ``EventStore``: atomic multi-stream appends, idempotency keys, commit-ordered global positions.
public final class InMemoryEventStore: EventStore {
    /// The store's settings.
    public struct Configuration: Sendable {
        /// The largest payload accepted, in bytes.
        public var maximumPayloadBytes: Int
        /// The source of recorded-at times (truncated to microseconds like every store).
        public var now: @Sendable () -> Date

        /// Creates settings: 1 MiB payloads and the system clock by default.
        public init(maximumPayloadBytes: Int = 1 << 20, now: @escaping @Sendable () -> Date = { Date() }) {
            self.maximumPayloadBytes = maximumPayloadBytes
            self.now = now
        }
    }

    private struct IdempotencyRecord {
        var positions: Range<Int>
        var streamVersions: [StreamID: Int]
    }

    private struct Storage {
        var events: [StoredEvent] = []
        var streams: [StreamID: [Int]] = [:]
        var keys: [IdempotencyKey: IdempotencyRecord] = [:]
        var ids: Set<EventID> = []

        func version(of stream: StreamID) -> Int { streams[stream]?.count ?? 0 }

        func result(of record: IdempotencyRecord) -> AppendResult {
            AppendResult(outcome: .duplicate, events: Array(events[record.positions]), streamVersions: record.streamVersions)
        }
    }

    private let storage = Mutex(Storage())
    /// The settings.
    public let configuration: Configuration

    /// Creates an empty store.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// See ``EventStore/read(_:)``.
    public func read(_ streams: [StreamID]) async throws -> StreamsSnapshot {
        storage.withLock { storage in
            var versions: [StreamID: Int] = [:]
            var indexes: [Int] = []
            for stream in streams where versions[stream] == nil {
                let streamIndexes = storage.streams[stream] ?? []
                versions[stream] = streamIndexes.count
                indexes.append(contentsOf: streamIndexes)
            }
            return StreamsSnapshot(events: indexes.sorted().map { storage.events[$0] }, versions: versions)
        }
    }

    /// See ``EventStore/append(_:)``.
    public func append(_ request: AppendRequest) async throws -> AppendResult {
        try request.validate(maximumPayloadBytes: configuration.maximumPayloadBytes)
        let recordedAt = RecordedTime.truncated(configuration.now())
        return try storage.withLock { storage throws(EventStoreError) -> AppendResult in
            if let key = request.idempotencyKey, let record = storage.keys[key] {
                return storage.result(of: record)
            }
            let streams = request.streams
            var actual: [StreamID: Int] = [:]
            for stream in streams { actual[stream] = storage.version(of: stream) }
            if let conflict = request.conflict(actualVersions: actual) { throw conflict }
            if request.events.contains(where: { storage.ids.contains($0.id) }) {
                throw EventStoreError(.invalidRequest, "the append collides with a stored event (an event id or stream version is already taken)")
            }
            let first = storage.events.count
            var stored: [StoredEvent] = []
            stored.reserveCapacity(request.events.count)
            for event in request.events {
                let version = actual[event.streamID, default: 0] + 1
                actual[event.streamID] = version
                let position = first + stored.count
                stored.append(StoredEvent(
                    id: event.id, streamID: event.streamID, streamVersion: version, globalPosition: position + 1,
                    eventType: event.eventType, payload: event.payload, metadata: event.metadata.normalized,
                    recordedAt: recordedAt
                ))
                storage.streams[event.streamID, default: []].append(position)
            }
            storage.events.append(contentsOf: stored)
            storage.ids.formUnion(stored.map(\.id))
            if let key = request.idempotencyKey {
                storage.keys[key] = IdempotencyRecord(positions: first..<storage.events.count, streamVersions: actual)
            }
            return AppendResult(outcome: .committed, events: stored, streamVersions: actual)
        }
    }

    /// See ``EventStore/appendResult(forIdempotencyKey:)``.
    public func appendResult(forIdempotencyKey key: IdempotencyKey) async throws -> AppendResult? {
        storage.withLock { storage in storage.keys[key].map { storage.result(of: $0) } }
    }

    /// See ``EventStore/readAll(after:limit:)``. Appends are atomic under one lock, so every position is final.
    public func readAll(after position: Int, limit: Int) async throws -> [StoredEvent] {
        try EventQuery.validateWindow(after: position, limit: limit)
        return storage.withLock { storage in
            guard position < storage.events.count else { return [] }
            return Array(storage.events[position..<min(storage.events.count, position + limit)])
        }
    }

    /// See ``EventStore/events(matching:)``.
    public func events(matching query: EventQuery) async throws -> [StoredEvent] {
        try query.validate()
        return storage.withLock { storage in
            guard query.afterPosition < storage.events.count else { return [] }
            var found: [StoredEvent] = []
            for event in storage.events[query.afterPosition...] where query.matches(event) {
                found.append(event)
                if found.count == query.limit { break }
            }
            return found
        }
    }
}
