import Foundation

/// An event store: streams of events with optimistic concurrency, atomic multi-stream appends, idempotent
/// appends and a global order that tailing readers can follow without missing late commits.
///
/// Every method throws ``EventStoreError``. All three stores of the project pass the same contract suite
/// (`EventCoreTestKit.EventStoreContract`), so code written against this protocol behaves the same on each.
public protocol EventStore: Sendable {
    /// Reads the complete streams `streams` from one consistent snapshot.
    ///
    /// A stream without events reads as version 0. Duplicate ids are read once.
    func read(_ streams: [StreamID]) async throws -> StreamsSnapshot

    /// Reads what is new in `streams` for a caller that already holds some of their events, from one consistent
    /// snapshot: the events of each stream whose version is greater than `knownVersions[stream]` (all its events
    /// for a stream not listed), in global order, and the current version of every stream read.
    ///
    /// A stream's events are immutable and its versions have no gaps, so the events the caller holds followed by
    /// these are the whole stream as ``read(_:)`` would return it at that snapshot. The default implementation
    /// reads the whole streams and drops what the caller holds; stores override it to send only what is new.
    func read(_ streams: [StreamID], after knownVersions: [StreamID: Int]) async throws -> StreamsSnapshot

    /// Appends `request` atomically: every expectation is checked and every event is written, or nothing is.
    ///
    /// - Returns: `.committed` with the stored events and the new version of every stream named in the request,
    ///   or `.duplicate` with the original result when the request's idempotency key was already recorded.
    /// - Throws: ``EventStoreError/Code/versionConflict`` listing every stream's expected and actual version when an
    ///   expectation does not hold; nothing is written then.
    func append(_ request: AppendRequest) async throws -> AppendResult

    /// The result recorded for `key`, marked `.duplicate`, or `nil` if no append has used the key.
    func appendResult(forIdempotencyKey key: IdempotencyKey) async throws -> AppendResult?

    /// Up to `limit` events with a global position greater than `position`, in global order.
    ///
    /// Commit-safe: an event is returned only once no event with a lower position can still commit, so a reader
    /// that continues from the last position it saw never skips an event.
    func readAll(after position: Int, limit: Int) async throws -> [StoredEvent]

    /// Events matching `query` (types and recorded-at range), in global order, with the same commit-safety
    /// as ``readAll(after:limit:)``.
    func events(matching query: EventQuery) async throws -> [StoredEvent]

    /// Where work that calls this store runs cheapest, if the store knows: ``CommandExecutor`` runs each command
    /// there (its reads, its decision and its append), so that the store's answers resume it without a switch
    /// of threads. `nil` (the default) leaves commands where their callers run them. Whatever runs there must
    /// not block: a command's `apply` and `handle` are pure and quick.
    var preferredExecutor: (any TaskExecutor)? { get }
}

extension EventStore {
    /// See ``EventStore/preferredExecutor``: none.
    public var preferredExecutor: (any TaskExecutor)? { nil }

    /// See ``EventStore/read(_:after:)``: the whole streams, less the events the caller holds.
    public func read(_ streams: [StreamID], after knownVersions: [StreamID: Int]) async throws -> StreamsSnapshot {
        var snapshot = try await read(streams)
        if !knownVersions.isEmpty {
            snapshot.events.removeAll { $0.streamVersion <= knownVersions[$0.streamID] ?? 0 }
        }
        return snapshot
    }

    /// Reads one complete stream.
    public func read(stream: StreamID) async throws -> StreamsSnapshot {
        try await read([stream])
    }
}

/// The events of some streams, read from one snapshot, with each stream's version at that moment.
public struct StreamsSnapshot: Sendable, Hashable {
    /// The events of all the streams read, in global order.
    public var events: [StoredEvent]
    /// The version (number of events) of every stream read; 0 for a stream with no events.
    public var versions: [StreamID: Int]

    /// Creates a snapshot.
    public init(events: [StoredEvent], versions: [StreamID: Int]) {
        self.events = events
        self.versions = versions
    }

    /// The events of one stream, in version order.
    public func events(in stream: StreamID) -> [StoredEvent] {
        events.filter { $0.streamID == stream }
    }

    /// The version of `stream` (0 if it was not read or has no events).
    public func version(of stream: StreamID) -> Int { versions[stream] ?? 0 }
}

/// What a writer expects a stream's version to be.
public enum ExpectedVersion: Sendable, Hashable, CustomStringConvertible {
    /// Accept whatever the version is.
    case any
    /// The stream must have exactly this many events (0: the stream must not have any).
    case exact(Int)

    /// The stream must have no events.
    public static let noStream = ExpectedVersion.exact(0)

    /// `any` or the number.
    public var description: String {
        switch self {
        case .any: "any"
        case .exact(let version): String(version)
        }
    }

    /// The exact version, or `nil` for `.any`.
    public var exactVersion: Int? {
        if case .exact(let version) = self { return version }
        return nil
    }
}

/// An event about to be appended.
public struct NewEvent: Sendable, Hashable {
    /// The id it will keep.
    public var id: EventID
    /// The stream it goes to.
    public var streamID: StreamID
    /// Its type name.
    public var eventType: String
    /// Its encoded form.
    public var payload: Data
    /// Its metadata.
    public var metadata: EventMetadata

    /// Creates an event to append; the id defaults to a new UUID version 7.
    public init(id: EventID = EventID(), streamID: StreamID, eventType: String, payload: Data, metadata: EventMetadata = EventMetadata()) {
        self.id = id
        self.streamID = streamID
        self.eventType = eventType
        self.payload = payload
        self.metadata = metadata
    }
}

/// One atomic write: expected versions for some streams, events for some streams, and an optional idempotency key.
///
/// A stream that receives events but has no expectation is written whatever its version (`.any`). An
/// expectation on a stream that receives no event is still checked: that is how a command's read-only streams
/// take part in the conflict check. A request without events still checks its expectations and records its key.
public struct AppendRequest: Sendable, Hashable {
    /// The longest event type name accepted, in UTF-8 bytes.
    public static let maximumEventTypeLength = 255

    /// Events in the order they are to be stored; each stream's events get consecutive versions in this order.
    public var events: [NewEvent]
    /// The version each stream must have for the write to commit.
    public var expectations: [StreamID: ExpectedVersion]
    /// If set, a second append with the same key commits nothing and reports `.duplicate`.
    public var idempotencyKey: IdempotencyKey?

    /// Creates a request.
    public init(events: [NewEvent], expectations: [StreamID: ExpectedVersion] = [:], idempotencyKey: IdempotencyKey? = nil) {
        self.events = events
        self.expectations = expectations
        self.idempotencyKey = idempotencyKey
    }

    /// Every stream the request names (written or expected), sorted: the order stores lock them in.
    public var streams: [StreamID] {
        Array(Set(events.map(\.streamID)).union(expectations.keys)).sorted()
    }

    /// Checks what every store checks before touching storage: payload sizes, event types, distinct event ids.
    public func validate(maximumPayloadBytes: Int) throws(EventStoreError) {
        var seen = Set<EventID>()
        for event in events {
            if event.payload.count > maximumPayloadBytes {
                throw EventStoreError(
                    .payloadTooLarge,
                    "the payload of a \(event.eventType.debugDescription) event has \(event.payload.count) bytes, the limit is \(maximumPayloadBytes)",
                    streamID: event.streamID
                )
            }
            if event.eventType.isEmpty || event.eventType.utf8.count > AppendRequest.maximumEventTypeLength {
                throw EventStoreError(.invalidRequest, "an event type must have 1 to \(AppendRequest.maximumEventTypeLength) bytes", streamID: event.streamID)
            }
            if !seen.insert(event.id).inserted {
                throw EventStoreError(.invalidRequest, "event id \(event.id) appears twice in one append", streamID: event.streamID)
            }
        }
        for (stream, expectation) in expectations {
            if case .exact(let version) = expectation, version < 0 {
                throw EventStoreError(.invalidRequest, "an expected version cannot be negative", streamID: stream)
            }
        }
    }

    /// The conflict error for this request given the store's actual versions, or `nil` if every expectation holds.
    public func conflict(actualVersions: [StreamID: Int]) -> EventStoreError? {
        let entries = streams.map { stream in
            StreamVersionConflict(streamID: stream, expected: expectations[stream]?.exactVersion, actual: actualVersions[stream] ?? 0)
        }
        guard entries.contains(where: \.isMismatch) else { return nil }
        let mismatched = entries.filter(\.isMismatch).map(\.streamID.rawValue).joined(separator: ", ")
        return EventStoreError(.versionConflict, "the expected version of \(mismatched) no longer holds", conflicts: entries)
    }
}

/// What an append did.
public struct AppendResult: Sendable, Hashable {
    /// Whether the append wrote, or found its idempotency key already recorded.
    public enum Outcome: Sendable, Hashable {
        /// The append committed now.
        case committed
        /// An earlier append with the same idempotency key committed; this one wrote nothing.
        case duplicate
    }

    /// Whether this append committed or was a duplicate.
    public var outcome: Outcome
    /// The stored events, in global order (for a duplicate: the events of the original append).
    public var events: [StoredEvent]
    /// The version of every stream named in the request, right after the (original) commit.
    public var streamVersions: [StreamID: Int]

    /// Creates a result.
    public init(outcome: Outcome, events: [StoredEvent], streamVersions: [StreamID: Int]) {
        self.outcome = outcome
        self.events = events
        self.streamVersions = streamVersions
    }

    /// The global positions of the stored events, increasing.
    public var globalPositions: [Int] { events.map(\.globalPosition) }
}

/// A query over the global order by event type and recorded-at time.
public struct EventQuery: Sendable, Hashable {
    /// The type names to return; empty means every type.
    public var eventTypes: [String]
    /// Only events recorded at or after this time.
    public var recordedFrom: Date?
    /// Only events recorded before this time.
    public var recordedBefore: Date?
    /// Only events after this global position (for paging).
    public var afterPosition: Int
    /// At most this many events.
    public var limit: Int

    /// Creates a query.
    public init(eventTypes: [String] = [], recordedFrom: Date? = nil, recordedBefore: Date? = nil, afterPosition: Int = 0, limit: Int = 1000) {
        self.eventTypes = eventTypes
        self.recordedFrom = recordedFrom
        self.recordedBefore = recordedBefore
        self.afterPosition = afterPosition
        self.limit = limit
    }

    /// Whether `event` satisfies the type and time conditions (not the position or limit).
    public func matches(_ event: StoredEvent) -> Bool {
        if !eventTypes.isEmpty && !eventTypes.contains(event.eventType) { return false }
        if let recordedFrom, event.recordedAt < recordedFrom { return false }
        if let recordedBefore, event.recordedAt >= recordedBefore { return false }
        return true
    }

    /// Throws ``EventStoreError/Code/invalidRequest`` for a negative position or a limit below 1.
    public func validate() throws(EventStoreError) {
        try EventQuery.validateWindow(after: afterPosition, limit: limit)
    }

    /// Throws ``EventStoreError/Code/invalidRequest`` for a negative position or a limit below 1; every store
    /// checks ``EventStore/readAll(after:limit:)`` arguments with it.
    public static func validateWindow(after position: Int, limit: Int) throws(EventStoreError) {
        guard position >= 0 else { throw EventStoreError(.invalidRequest, "a global position cannot be negative") }
        guard limit >= 1 else { throw EventStoreError(.invalidRequest, "a read limit must be at least 1") }
    }
}
