import EventCore
import Foundation
import Synchronization

/// The behaviour every ``EventCore/EventStore`` must have, written once and run against every backend.
///
/// Each ``Case`` gets a fresh, empty store from the caller, configured with the default payload limit of 1 MiB, and throws a ``ContractViolation`` (or the store's
/// error) when the store misbehaves. Run them from Swift Testing with a parameterized test:
///
/// ```swift
/// @Test(arguments: EventStoreContract.cases)
/// func memoryStore(_ contractCase: EventStoreContract.Case) async throws {
///     try await contractCase.run(against: InMemoryEventStore())
/// }
/// ```
public enum EventStoreContract {
    /// One named behaviour of the contract.
    public struct Case: Sendable, CustomStringConvertible {
        /// A short name saying what is checked.
        public let name: String
        private let body: @Sendable (any EventStore) async throws -> Void

        init(_ name: String, _ body: @escaping @Sendable (any EventStore) async throws -> Void) {
            self.name = name
            self.body = body
        }

        /// Runs the case against `store`, which must be empty.
        public func run(against store: any EventStore) async throws {
            try await body(store)
        }

        /// The name.
        public var description: String { name }
    }

    /// Every case of the contract.
    public static let cases: [Case] = reading + appending + conflicts + idempotency + emptyWrites
        + globalOrder + queries + validation + concurrency + execution + cachedExecution
}

// MARK: - Helpers

private let codec = EventCodec()

private func stream(_ name: String) -> StreamID {
    // Names used here are always valid.
    try! StreamID(name)
}

private func key(_ text: String) -> IdempotencyKey {
    try! IdempotencyKey(text)
}

private func bankEvent(_ event: SampleBank.Event, to streamID: StreamID, metadata: EventMetadata = EventMetadata()) -> NewEvent {
    let encoded = try! codec.encode(event)
    return NewEvent(streamID: streamID, eventType: encoded.eventType, payload: encoded.payload, metadata: metadata)
}

private func deposits(_ amounts: [Int], to streamID: StreamID) -> [NewEvent] {
    amounts.map { bankEvent(.deposited(amount: $0), to: streamID) }
}

private func requireIncreasing(_ positions: [Int], _ what: String, file: String = #fileID, line: Int = #line) throws {
    for (previous, next) in zip(positions, positions.dropFirst()) where next <= previous {
        throw ContractViolation("\(what): positions not strictly increasing: \(positions)", file: file, line: line)
    }
}

/// A count shared between the tasks of a case.
private final class SharedCounter: Sendable {
    private let count = Atomic<Int>(0)
    var value: Int { count.load(ordering: .acquiring) }
    func increment() { count.add(1, ordering: .releasing) }
}

private func readEverything(_ store: any EventStore, pageSize: Int = 1000) async throws -> [StoredEvent] {
    var all: [StoredEvent] = []
    var position = 0
    while true {
        let page = try await store.readAll(after: position, limit: pageSize)
        guard let last = page.last else { return all }
        all.append(contentsOf: page)
        position = last.globalPosition
    }
}

// MARK: - Reading

extension EventStoreContract {
    static let reading: [Case] = [
        Case("a stream without events reads as version 0") { store in
            let snapshot = try await store.read(stream: stream("empty"))
            try requireEqual(snapshot.events.count, 0, "events")
            try requireEqual(snapshot.version(of: stream("empty")), 0, "version")
            try requireEqual(snapshot.versions[stream("empty")], 0, "version entry present")
        },
        Case("reading several streams returns their events merged in global order") { store in
            let a = stream("merge-a"), b = stream("merge-b"), c = stream("merge-c")
            _ = try await store.append(AppendRequest(events: deposits([1], to: a)))
            _ = try await store.append(AppendRequest(events: deposits([2], to: b)))
            _ = try await store.append(AppendRequest(events: deposits([3], to: c)))
            _ = try await store.append(AppendRequest(events: deposits([4], to: a)))
            let snapshot = try await store.read([b, a])
            try requireEqual(snapshot.events.map(\.streamID), [a, b, a], "streams in global order")
            try requireIncreasing(snapshot.events.map(\.globalPosition), "merged read")
            try requireEqual(snapshot.versions, [a: 2, b: 1], "versions")
            try requireEqual(snapshot.events(in: a).map(\.streamVersion), [1, 2], "versions of a")
        },
        Case("reading the same stream twice returns its events once") { store in
            let a = stream("dedupe")
            _ = try await store.append(AppendRequest(events: deposits([1, 2], to: a)))
            let snapshot = try await store.read([a, a])
            try requireEqual(snapshot.events.count, 2, "events")
            try requireEqual(snapshot.version(of: a), 2, "version")
        },
        Case("an appended event reads back with every field intact") { store in
            let a = stream("roundtrip-ä/stream:1")
            let metadata = EventMetadata(
                correlationID: "order-17", causationID: "cmd-3", sourceMessageID: "msg-99",
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            )
            let payload = Data(#"{"text":"zürich \u0000 ☃","bytes":[0,255]}"#.utf8)
            let event = NewEvent(streamID: a, eventType: "Ünïcode.Type/v2", payload: payload, metadata: metadata)
            let before = Date()
            let result = try await store.append(AppendRequest(events: [event]))
            let after = Date()
            let read = try await store.read(stream: a).events
            try requireEqual(read.count, 1, "events read")
            let stored = read[0]
            try requireEqual(stored, result.events[0], "read-back equals append result")
            try requireEqual(stored.id, event.id, "event id")
            try requireEqual(stored.eventType, event.eventType, "type")
            try requireEqual(stored.payload, payload, "payload bytes")
            try requireEqual(stored.metadata, metadata, "metadata")
            try requireEqual(stored.streamVersion, 1, "version")
            try require(stored.recordedAt >= before.addingTimeInterval(-0.001) && stored.recordedAt <= after.addingTimeInterval(0.001),
                        "recorded-at \(stored.recordedAt) outside [\(before), \(after)]")
            try requireEqual(RecordedTime.truncated(stored.recordedAt), stored.recordedAt, "recorded-at kept to the microsecond")
        },
        Case("empty metadata strings read back as absent") { store in
            let a = stream("metadata-empty")
            let event = bankEvent(.deposited(amount: 1), to: a, metadata: EventMetadata(correlationID: "", causationID: "c", sourceMessageID: "", traceparent: nil))
            let result = try await store.append(AppendRequest(events: [event]))
            let stored = try await store.read(stream: a).events[0]
            try requireEqual(stored.metadata, EventMetadata(causationID: "c"), "metadata")
            try requireEqual(result.events[0].metadata, stored.metadata, "append result metadata")
        },
    ]
}

// MARK: - Appending

extension EventStoreContract {
    static let appending: [Case] = [
        Case("versions start at 1 and follow on without gaps") { store in
            let a = stream("versions")
            let first = try await store.append(AppendRequest(events: deposits([1, 2, 3], to: a), expectations: [a: .noStream]))
            try requireEqual(first.events.map(\.streamVersion), [1, 2, 3], "first append versions")
            let second = try await store.append(AppendRequest(events: deposits([4], to: a), expectations: [a: .exact(3)]))
            try requireEqual(second.events.map(\.streamVersion), [4], "second append versions")
            try requireEqual(second.streamVersions, [a: 4], "returned version")
            try requireEqual(try await store.read(stream: a).events.map(\.streamVersion), [1, 2, 3, 4], "read versions")
        },
        Case("an append returns the stored events with increasing positions and every stream's new version") { store in
            let a = stream("result-a"), b = stream("result-b"), watched = stream("result-watched")
            let events = deposits([1], to: a) + deposits([2], to: b) + deposits([3], to: a)
            let result = try await store.append(AppendRequest(events: events, expectations: [a: .noStream, b: .noStream, watched: .noStream]))
            try requireEqual(result.outcome, .committed, "outcome")
            try requireEqual(result.events.map(\.id), events.map(\.id), "ids in request order")
            try requireEqual(result.events.map(\.streamVersion), [1, 1, 2], "versions")
            try requireIncreasing(result.globalPositions, "append result")
            try require(result.globalPositions.allSatisfy { $0 > 0 }, "positions are positive: \(result.globalPositions)")
            try requireEqual(result.streamVersions, [a: 2, b: 1, watched: 0], "stream versions")
            let all = try await store.readAll(after: 0, limit: 10)
            try requireEqual(all, result.events, "readAll sees the same events")
        },
        Case("a multi-stream append is visible completely") { store in
            let streams = (0..<5).map { stream("wide-\($0)") }
            let events = streams.flatMap { deposits([1, 2], to: $0) }
            let result = try await store.append(AppendRequest(events: events, expectations: Dictionary(uniqueKeysWithValues: streams.map { ($0, .noStream) })))
            try requireEqual(result.events.count, 10, "events")
            let snapshot = try await store.read(streams)
            try requireEqual(snapshot.events, result.events, "read-back")
            try require(streams.allSatisfy { snapshot.version(of: $0) == 2 }, "every stream at version 2: \(snapshot.versions)")
        },
        Case("a large batch keeps order, versions and positions") { store in
            let streams = (0..<3).map { stream("batch-\($0)") }
            let events = (0..<300).map { bankEvent(.deposited(amount: $0), to: streams[$0 % 3]) }
            let result = try await store.append(AppendRequest(events: events))
            try requireEqual(result.events.map(\.id), events.map(\.id), "order")
            try requireIncreasing(result.globalPositions, "batch")
            for (index, streamID) in streams.enumerated() {
                let read = try await store.read(stream: streamID).events
                try requireEqual(read.map(\.streamVersion), Array(1...100), "versions of stream \(index)")
                try requireEqual(result.streamVersions[streamID], 100, "returned version of stream \(index)")
            }
        },
        Case("expected version .any appends whatever the version") { store in
            let a = stream("any")
            _ = try await store.append(AppendRequest(events: deposits([1, 2], to: a)))
            let result = try await store.append(AppendRequest(events: deposits([3], to: a), expectations: [a: .any]))
            try requireEqual(result.events.map(\.streamVersion), [3], "version")
        },
    ]
}

// MARK: - Conflicts

extension EventStoreContract {
    static let conflicts: [Case] = [
        Case("a conflict on one stream writes nothing to any stream") { store in
            let a = stream("atomic-a"), b = stream("atomic-b")
            _ = try await store.append(AppendRequest(events: deposits([10], to: a)))
            let before = try await readEverything(store)
            let error = try await requireStoreError(.versionConflict) {
                try await store.append(AppendRequest(
                    events: deposits([1], to: b) + deposits([2], to: a),
                    expectations: [a: .noStream, b: .noStream]
                ))
            }
            try require(error.isRetryable, "a conflict is retryable")
            try requireEqual(try await readEverything(store), before, "store unchanged")
            try requireEqual(try await store.read(stream: b).version(of: b), 0, "b untouched")
        },
        Case("a conflict names every stream with expected and actual versions") { store in
            let a = stream("report-a"), b = stream("report-b"), c = stream("report-c")
            _ = try await store.append(AppendRequest(events: deposits([1, 2], to: a) + deposits([1], to: c)))
            let error = try await requireStoreError(.versionConflict) {
                try await store.append(AppendRequest(events: deposits([5], to: b), expectations: [a: .exact(1), b: .noStream, c: .exact(1)]))
            }
            let byStream = Dictionary(uniqueKeysWithValues: error.conflicts.map { ($0.streamID, $0) })
            try requireEqual(Set(byStream.keys), [a, b, c], "streams reported")
            try requireEqual(byStream[a]?.expected, 1, "a expected")
            try requireEqual(byStream[a]?.actual, 2, "a actual")
            try requireEqual(byStream[a]?.isMismatch, true, "a mismatched")
            try requireEqual(byStream[b]?.actual, 0, "b actual")
            try requireEqual(byStream[c]?.isMismatch, false, "c matched")
            try require(error.description.contains("report-a expected 1, actual 2"), "description names the stream: \(error)")
        },
        Case("a stream that is only read takes part in the conflict check") { store in
            let written = stream("ro-written"), readOnly = stream("ro-guard")
            _ = try await store.append(AppendRequest(events: deposits([1], to: readOnly)))
            let ok = try await store.append(AppendRequest(events: deposits([1], to: written), expectations: [written: .noStream, readOnly: .exact(1)]))
            try requireEqual(ok.streamVersions[readOnly], 1, "read-only stream version returned unchanged")
            _ = try await store.append(AppendRequest(events: deposits([2], to: readOnly)))
            let error = try await requireStoreError(.versionConflict) {
                try await store.append(AppendRequest(events: deposits([2], to: written), expectations: [written: .exact(1), readOnly: .exact(1)]))
            }
            try requireEqual(error.conflicts.first { $0.streamID == readOnly }?.actual, 2, "read-only actual")
            try requireEqual(try await store.read(stream: written).version(of: written), 1, "nothing written")
        },
        Case("expecting no stream fails once the stream exists") { store in
            let a = stream("nostream")
            _ = try await store.append(AppendRequest(events: deposits([1], to: a), expectations: [a: .noStream]))
            try await requireStoreError(.versionConflict) {
                try await store.append(AppendRequest(events: deposits([1], to: a), expectations: [a: .noStream]))
            }
        },
        Case("expecting a version beyond the stream's end fails") { store in
            let a = stream("beyond")
            _ = try await store.append(AppendRequest(events: deposits([1], to: a)))
            let error = try await requireStoreError(.versionConflict) {
                try await store.append(AppendRequest(events: deposits([1], to: a), expectations: [a: .exact(3)]))
            }
            try requireEqual(error.conflicts, [StreamVersionConflict(streamID: a, expected: 3, actual: 1)], "conflicts")
        },
    ]
}

// MARK: - Idempotency

extension EventStoreContract {
    static let idempotency: [Case] = [
        Case("a second append with the same key commits nothing and returns the original result") { store in
            let a = stream("idem"), k = key("consumer/message-1")
            let first = try await store.append(AppendRequest(events: deposits([1, 2], to: a), expectations: [a: .noStream], idempotencyKey: k))
            try requireEqual(first.outcome, .committed, "first outcome")
            let second = try await store.append(AppendRequest(events: deposits([1, 2], to: a), expectations: [a: .noStream], idempotencyKey: k))
            try requireEqual(second.outcome, .duplicate, "second outcome")
            try requireEqual(second.events, first.events, "original events")
            try requireEqual(second.streamVersions, first.streamVersions, "original versions")
            try requireEqual(try await store.read(stream: a).version(of: a), 2, "written once")
        },
        Case("a duplicate key wins over different events and stale expectations") { store in
            let a = stream("idem-different"), b = stream("idem-other"), k = key("consumer/message-2")
            let first = try await store.append(AppendRequest(events: deposits([1], to: a), idempotencyKey: k))
            _ = try await store.append(AppendRequest(events: deposits([5], to: a)))
            let second = try await store.append(AppendRequest(events: deposits([9], to: b), expectations: [a: .exact(0), b: .noStream], idempotencyKey: k))
            try requireEqual(second.outcome, .duplicate, "outcome")
            try requireEqual(second.events, first.events, "original events")
            try requireEqual(try await store.read(stream: b).version(of: b), 0, "nothing written to b")
        },
        Case("the key is recorded even when the write has no events") { store in
            let a = stream("idem-empty"), k = key("consumer/message-3")
            let first = try await store.append(AppendRequest(events: [], expectations: [a: .noStream], idempotencyKey: k))
            try requireEqual(first.outcome, .committed, "first outcome")
            try requireEqual(first.events, [], "no events")
            let second = try await store.append(AppendRequest(events: deposits([1], to: a), expectations: [a: .noStream], idempotencyKey: k))
            try requireEqual(second.outcome, .duplicate, "second outcome")
            try requireEqual(second.events, [], "original (empty) events")
            try requireEqual(try await store.read(stream: a).version(of: a), 0, "nothing written")
        },
        Case("a conflicting append does not record its key") { store in
            let a = stream("idem-conflict"), k = key("consumer/message-4")
            _ = try await store.append(AppendRequest(events: deposits([1], to: a)))
            try await requireStoreError(.versionConflict) {
                try await store.append(AppendRequest(events: deposits([2], to: a), expectations: [a: .noStream], idempotencyKey: k))
            }
            try requireEqual(try await store.appendResult(forIdempotencyKey: k), nil, "no record after a conflict")
            let retried = try await store.append(AppendRequest(events: deposits([2], to: a), expectations: [a: .exact(1)], idempotencyKey: k))
            try requireEqual(retried.outcome, .committed, "retry commits")
        },
        Case("the recorded result of a key can be looked up") { store in
            let a = stream("idem-lookup"), k = key("consumer/message-5")
            try requireEqual(try await store.appendResult(forIdempotencyKey: k), nil, "nothing before")
            let first = try await store.append(AppendRequest(events: deposits([7], to: a), expectations: [a: .noStream], idempotencyKey: k))
            let found = try await store.appendResult(forIdempotencyKey: k)
            try requireEqual(found?.outcome, .duplicate, "looked-up outcome")
            try requireEqual(found?.events, first.events, "looked-up events")
            try requireEqual(found?.streamVersions, first.streamVersions, "looked-up versions")
            try requireEqual(try await store.appendResult(forIdempotencyKey: key("consumer/other")), nil, "other key unknown")
        },
    ]
}

// MARK: - Empty writes

extension EventStoreContract {
    static let emptyWrites: [Case] = [
        Case("an empty write with holding expectations commits nothing and returns current versions") { store in
            let a = stream("empty-a"), b = stream("empty-b")
            _ = try await store.append(AppendRequest(events: deposits([1, 2], to: a)))
            let before = try await readEverything(store)
            let result = try await store.append(AppendRequest(events: [], expectations: [a: .exact(2), b: .noStream]))
            try requireEqual(result.outcome, .committed, "outcome")
            try requireEqual(result.events, [], "events")
            try requireEqual(result.streamVersions, [a: 2, b: 0], "versions")
            try requireEqual(try await readEverything(store), before, "store unchanged")
            let next = try await store.append(AppendRequest(events: deposits([3], to: b)))
            try requireEqual(next.events.map(\.streamVersion), [1], "b still starts at 1")
        },
        Case("an empty write with a stale expectation conflicts") { store in
            let a = stream("empty-stale")
            _ = try await store.append(AppendRequest(events: deposits([1], to: a)))
            try await requireStoreError(.versionConflict) {
                try await store.append(AppendRequest(events: [], expectations: [a: .noStream]))
            }
        },
        Case("an empty write without expectations is a committed no-op") { store in
            let result = try await store.append(AppendRequest(events: []))
            try requireEqual(result, AppendResult(outcome: .committed, events: [], streamVersions: [:]), "result")
            try requireEqual(try await store.readAll(after: 0, limit: 10), [], "nothing stored")
        },
    ]
}

// MARK: - Global order

extension EventStoreContract {
    static let globalOrder: [Case] = [
        Case("global positions increase across appends in commit order") { store in
            var positions: [Int] = []
            for index in 0..<10 {
                let result = try await store.append(AppendRequest(events: deposits([index], to: stream("order-\(index % 3)"))))
                positions.append(contentsOf: result.globalPositions)
            }
            try requireIncreasing(positions, "commit order")
            try requireEqual(try await readEverything(store).map(\.globalPosition), positions, "readAll order")
        },
        Case("readAll continues after a position and honours the limit") { store in
            let a = stream("tail")
            let result = try await store.append(AppendRequest(events: deposits(Array(1...6), to: a)))
            let positions = result.globalPositions
            try requireEqual(try await store.readAll(after: 0, limit: 100).map(\.globalPosition), positions, "from the start")
            try requireEqual(try await store.readAll(after: positions[2], limit: 100).map(\.globalPosition), Array(positions[3...]), "after the third")
            try requireEqual(try await store.readAll(after: positions[0], limit: 2).map(\.globalPosition), Array(positions[1...2]), "limited")
            try requireEqual(try await store.readAll(after: positions[5], limit: 100), [], "after the end")
        },
        Case("paging through readAll returns every event exactly once") { store in
            var written: [EventID] = []
            for index in 0..<25 {
                let result = try await store.append(AppendRequest(events: deposits([index, index], to: stream("page-\(index % 4)"))))
                written.append(contentsOf: result.events.map(\.id))
            }
            try requireEqual(try await readEverything(store, pageSize: 7).map(\.id), written, "paged ids")
        },
        Case("a tailing reader sees every event once while writers commit concurrently") { store in
            let writers = 4, appendsPerWriter = 40
            let writersFinished = SharedCounter()
            let tailed = try await withThrowingTaskGroup(of: [StoredEvent]?.self) { group in
                for writer in 0..<writers {
                    group.addTask {
                        for index in 0..<appendsPerWriter {
                            let a = stream("race-\(writer)"), b = stream("race-shared-\(index % 3)")
                            _ = try await store.append(AppendRequest(events: deposits([index], to: a) + deposits([index], to: b)))
                        }
                        writersFinished.increment()
                        return nil
                    }
                }
                group.addTask {
                    // The reader stops once the writers are done and a read after that finds nothing new, so a
                    // store that skips an event fails this case instead of leaving the reader waiting forever.
                    var seen: [StoredEvent] = []
                    var position = 0
                    var drainedAfterWriters = false
                    while !drainedAfterWriters {
                        try Task.checkCancellation()
                        let writersDone = writersFinished.value == writers
                        let page = try await store.readAll(after: position, limit: 16)
                        if let last = page.last {
                            position = last.globalPosition
                            seen.append(contentsOf: page)
                        } else if writersDone {
                            drainedAfterWriters = true
                        } else {
                            try await Task.sleep(for: .milliseconds(1))
                        }
                    }
                    return seen
                }
                var tailed: [StoredEvent] = []
                for try await result in group { if let result { tailed = result } }
                return tailed
            }
            let final = try await readEverything(store)
            try requireEqual(final.count, writers * appendsPerWriter * 2, "events stored")
            try requireEqual(tailed.map(\.id), final.map(\.id), "the tailer saw every event once, in order")
        },
    ]
}

// MARK: - Queries by type and time

extension EventStoreContract {
    static let queries: [Case] = [
        Case("events can be listed by type") { store in
            let a = stream("types-a"), b = stream("types-b")
            _ = try await store.append(AppendRequest(events: [bankEvent(.opened(owner: "x"), to: a), bankEvent(.deposited(amount: 1), to: a)]))
            _ = try await store.append(AppendRequest(events: [bankEvent(.opened(owner: "y"), to: b), bankEvent(.withdrawn(amount: 1), to: b)]))
            let opened = try await store.events(matching: EventQuery(eventTypes: ["AccountOpened"]))
            try requireEqual(opened.map(\.streamID), [a, b], "opened events")
            let money = try await store.events(matching: EventQuery(eventTypes: ["MoneyDeposited", "MoneyWithdrawn"]))
            try requireEqual(money.map(\.eventType), ["MoneyDeposited", "MoneyWithdrawn"], "money events")
            try requireEqual(try await store.events(matching: EventQuery()).count, 4, "all types")
            try requireEqual(try await store.events(matching: EventQuery(eventTypes: ["Unknown"])), [], "unknown type")
        },
        Case("events can be listed by recorded-at time range") { store in
            var recorded: [StoredEvent] = []
            for index in 0..<6 {
                recorded += try await store.append(AppendRequest(events: deposits([index], to: stream("time")))).events
            }
            let from = recorded[1].recordedAt, before = recorded[4].recordedAt
            let expected = recorded.filter { $0.recordedAt >= from && $0.recordedAt < before }
            let found = try await store.events(matching: EventQuery(recordedFrom: from, recordedBefore: before))
            try requireEqual(found, expected, "events in [from, before)")
            try require(found.contains(recorded[1]), "the start of the range is included")
            let everything = try await store.events(matching: EventQuery(recordedFrom: recorded[0].recordedAt))
            try requireEqual(everything, recorded, "open-ended range")
            let none = try await store.events(matching: EventQuery(recordedBefore: recorded[0].recordedAt))
            try requireEqual(none, [], "nothing before the first event")
        },
        Case("type queries page by position and limit") { store in
            var opened: [StoredEvent] = []
            for index in 0..<9 {
                let result = try await store.append(AppendRequest(events: [bankEvent(.opened(owner: "o\(index)"), to: stream("qpage-\(index)")), bankEvent(.deposited(amount: 1), to: stream("qpage-\(index)"))]))
                opened.append(result.events[0])
            }
            let firstPage = try await store.events(matching: EventQuery(eventTypes: ["AccountOpened"], limit: 4))
            try requireEqual(firstPage, Array(opened[0..<4]), "first page")
            let secondPage = try await store.events(matching: EventQuery(eventTypes: ["AccountOpened"], afterPosition: firstPage.last!.globalPosition, limit: 4))
            try requireEqual(secondPage, Array(opened[4..<8]), "second page")
        },
    ]
}

// MARK: - Validation

extension EventStoreContract {
    static let validation: [Case] = [
        Case("an oversized payload is refused and nothing is written") { store in
            let a = stream("oversized")
            let huge = NewEvent(streamID: a, eventType: "Huge", payload: Data(repeating: 0x41, count: (1 << 20) + 1))
            let error = try await requireStoreError(.payloadTooLarge) {
                try await store.append(AppendRequest(events: deposits([1], to: a) + [huge]))
            }
            try require(!error.isRetryable, "not retryable")
            try require(error.message.contains("limit"), "message names the limit: \(error.message)")
            try requireEqual(try await store.read(stream: a).version(of: a), 0, "nothing written")
        },
        Case("the same event id twice in one append is refused") { store in
            let a = stream("same-id")
            let event = bankEvent(.deposited(amount: 1), to: a)
            try await requireStoreError(.invalidRequest) { try await store.append(AppendRequest(events: [event, event])) }
            try requireEqual(try await store.read(stream: a).version(of: a), 0, "nothing written")
        },
        Case("an event id that is already stored is refused and nothing is written") { store in
            let a = stream("reused-id"), b = stream("reused-id-b")
            let first = bankEvent(.deposited(amount: 1), to: a)
            _ = try await store.append(AppendRequest(events: [first]))
            var reused = bankEvent(.deposited(amount: 2), to: a)
            reused.id = first.id
            try await requireStoreError(.invalidRequest) {
                try await store.append(AppendRequest(events: deposits([3], to: b) + [reused]))
            }
            try requireEqual(try await store.read([a, b]).versions, [a: 1, b: 0], "nothing written")
        },
        Case("a negative position or an empty limit is refused") { store in
            try await requireStoreError(.invalidRequest) { try await store.readAll(after: -1, limit: 10) }
            try await requireStoreError(.invalidRequest) { try await store.readAll(after: 0, limit: 0) }
            try await requireStoreError(.invalidRequest) { try await store.events(matching: EventQuery(limit: 0)) }
        },
    ]
}

// MARK: - Concurrency

extension EventStoreContract {
    static let concurrency: [Case] = [
        Case("of concurrent appends expecting the same version exactly one wins") { store in
            let a = stream("race-one")
            let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<8 {
                    group.addTask {
                        do {
                            _ = try await store.append(AppendRequest(events: deposits([index], to: a), expectations: [a: .noStream]))
                            return true
                        } catch let error as EventStoreError where error.code == .versionConflict {
                            return false
                        }
                    }
                }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            try requireEqual(outcomes.filter { $0 }.count, 1, "winners")
            try requireEqual(try await store.read(stream: a).version(of: a), 1, "one event")
        },
        Case("of concurrent appends with the same key exactly one commits") { store in
            let a = stream("race-key"), k = key("consumer/race")
            let results = try await withThrowingTaskGroup(of: AppendResult.self) { group in
                for index in 0..<8 {
                    group.addTask { try await store.append(AppendRequest(events: deposits([index], to: a), idempotencyKey: k)) }
                }
                return try await group.reduce(into: [AppendResult]()) { $0.append($1) }
            }
            let committed = results.filter { $0.outcome == .committed }
            try requireEqual(committed.count, 1, "committed")
            try require(results.allSatisfy { $0.events == committed[0].events }, "every duplicate reports the original events")
            try requireEqual(try await store.read(stream: a).version(of: a), 1, "one event")
        },
        Case("concurrent appends over the same streams in opposite orders all finish") { store in
            let a = stream("lock-a"), b = stream("lock-b")
            let committed = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<6 {
                    group.addTask {
                        let first = index % 2 == 0 ? a : b, second = index % 2 == 0 ? b : a
                        var done = 0
                        for _ in 0..<10 {
                            _ = try await store.append(AppendRequest(events: deposits([1], to: first) + deposits([1], to: second)))
                            done += 1
                        }
                        return done
                    }
                }
                return try await group.reduce(0, +)
            }
            try requireEqual(committed, 60, "appends")
            let snapshot = try await store.read([a, b])
            try requireEqual(snapshot.versions, [a: 60, b: 60], "versions")
        },
        Case("concurrent appends creating the same new streams in opposite orders all commit") { store in
            // Every round starts on streams nobody has written, so the appends race to create them; an append
            // without expectations must never fail for it.
            for round in 0..<15 {
                let a = stream("new-a-\(round)"), b = stream("new-b-\(round)"), c = stream("new-c-\(round)")
                let orders = [[a, b, c], [c, b, a], [b, a, c], [c, a, b]]
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for order in orders {
                        group.addTask {
                            _ = try await store.append(AppendRequest(events: order.flatMap { deposits([1], to: $0) }))
                        }
                    }
                    try await group.waitForAll()
                }
                let snapshot = try await store.read([a, b, c])
                for id in [a, b, c] {
                    // Within a stream, global order is version order: a reader folding in global order sees
                    // the stream's events in the order they were decided.
                    let versions = snapshot.events.filter { $0.streamID == id }.map(\.streamVersion)
                    try requireEqual(versions, [1, 2, 3, 4], "\(id.rawValue)'s versions in global order, round \(round)")
                }
                try requireEqual(snapshot.versions, [a: 4, b: 4, c: 4], "versions after round \(round)")
            }
        },
    ]
}

// MARK: - Executing commands

extension EventStoreContract {
    static func executor(_ store: any EventStore, maxRetries: Int = 5) -> (CommandExecutor, ImmediateClock) {
        let clock = ImmediateClock()
        let configuration = CommandExecutor.Configuration(
            retryPolicy: RetryPolicy(maxRetries: maxRetries, backoff: .exponential(initial: .milliseconds(1), multiplier: 2, maximum: .milliseconds(20)))
        )
        return (CommandExecutor(store: store, configuration: configuration, clock: clock, unitRandom: { 0.5 }), clock)
    }

    static let execution: [Case] = [
        Case("a two-stream command commits both events and returns them") { store in
            let (executor, _) = executor(store)
            let a = SampleBank.account(1), b = SampleBank.account(2)
            _ = try await executor.execute(SampleBank.OpenAccount(account: a, owner: "ann", initialDeposit: 100))
            let result = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 30))
            try requireEqual(result.outcome, .committed, "outcome")
            try requireEqual(result.events.map(\.streamID), [a, b], "streams written")
            try requireEqual(result.streamVersions, [a: 3, b: 1], "versions")
            let ledger = try SampleBank.ledger(of: try await store.read([a, b]).events)
            try requireEqual(ledger.balance(of: a), 70, "a")
            try requireEqual(ledger.balance(of: b), 30, "b")
        },
        Case("a change to a read-only stream between read and append makes the command retry") { store in
            let a = SampleBank.account(1), b = SampleBank.account(2), audit = stream("audit")
            let interfered = FirstClaim()
            let interfering = FaultInjectingEventStore(wrapping: store) { _ in
                if interfered.claim() { _ = try await store.append(AppendRequest(events: [bankEvent(.noted(text: "freeze"), to: audit)])) }
            }
            let (executor, clock) = executor(interfering)
            _ = try await store.append(AppendRequest(events: deposits([50], to: a)))
            do {
                let result = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10, auditStream: audit))
                throw ContractViolation("the transfer should have been refused after the retry, got \(result)")
            } catch let refusal as SampleBank.Refusal {
                try requireEqual(refusal, SampleBank.Refusal("transfers are frozen"), "refusal")
            }
            try requireEqual(interfering.statistics.storeConflicts, 1, "conflicts reported by the store")
            try requireEqual(clock.sleeps.count, 1, "one backoff")
            try requireEqual(try await store.read([a, b]).versions, [a: 1, b: 0], "the stale decision was not written")
        },
        Case("a change to a discovered stream between read and append makes the command retry") { store in
            let a = SampleBank.account(1), b = SampleBank.account(2)
            let interfered = FirstClaim()
            let interfering = FaultInjectingEventStore(wrapping: store) { _ in
                if interfered.claim() { _ = try await store.append(AppendRequest(events: deposits([5], to: b))) }
            }
            let (executor, _) = executor(interfering)
            _ = try await store.append(AppendRequest(events: deposits([50], to: a)))
            let result = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10, discoverDestination: true))
            try requireEqual(result.outcome, .committed, "outcome")
            try requireEqual(result.attempts, 2, "attempts")
            try requireEqual(result.streamVersions, [a: 2, b: 2], "versions after the retry")
            try requireEqual(try await store.read(stream: b).events.map(\.streamVersion), [1, 2], "b kept both events")
        },
        Case("a conflict that never clears reports every stream and the attempts") { store in
            let a = SampleBank.account(1), b = SampleBank.account(2)
            let interfering = FaultInjectingEventStore(wrapping: store) { _ in
                _ = try await store.append(AppendRequest(events: deposits([1], to: b)))
            }
            let (executor, clock) = executor(interfering, maxRetries: 3)
            _ = try await store.append(AppendRequest(events: deposits([50], to: a)))
            let error = try await requireStoreError(.versionConflict) {
                try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10))
            }
            try requireEqual(error.attempts, 4, "attempts")
            try requireEqual(Set(error.conflicts.map(\.streamID)), [a, b], "every stream read is reported")
            try requireEqual(error.conflicts.first { $0.streamID == b }.map { $0.actual - ($0.expected ?? 0) }, 1, "b moved by one")
            try requireEqual(clock.sleeps.count, 3, "one backoff per retry")
            try requireEqual(try await store.read(stream: a).version(of: a), 1, "a untouched")
        },
        Case("an idempotent command commits once; a redelivery is a duplicate with the original events") { store in
            let a = SampleBank.account(1), b = SampleBank.account(2), k = key("transfers/message-1")
            let (executor, _) = executor(store)
            _ = try await store.append(AppendRequest(events: deposits([15], to: a)))
            let options = ExecutionOptions(idempotencyKey: k, metadata: EventMetadata(correlationID: "c-1", sourceMessageID: "message-1"))
            let first = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10), options: options)
            let again = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10), options: options)
            try requireEqual(first.outcome, .committed, "first")
            try requireEqual(again.outcome, .duplicate, "again")
            try requireEqual(again.events, first.events, "original events")
            try require(first.events.allSatisfy { $0.metadata.correlationID == "c-1" && $0.metadata.sourceMessageID == "message-1" }, "metadata stamped")
            try requireEqual(try await store.read(stream: a).version(of: a), 2, "one withdrawal")
        },
        Case("a decision to write nothing records the key, so a redelivery cannot decide differently") { store in
            let a = SampleBank.account(1), b = SampleBank.account(2), k = key("transfers/message-2")
            let (executor, _) = executor(store)
            let options = ExecutionOptions(idempotencyKey: k)
            let first = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10), options: options)
            try requireEqual(first.outcome, .noOp, "nothing to do without money")
            _ = try await store.append(AppendRequest(events: deposits([100], to: a)))
            let again = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10), options: options)
            try requireEqual(again.outcome, .duplicate, "redelivery")
            try requireEqual(again.events, [], "no events")
            try requireEqual(try await store.read(stream: b).version(of: b), 0, "still nothing in b")
        },
        Case("an undecodable stored event is reported, not skipped") { store in
            let a = SampleBank.account(1), b = SampleBank.account(2)
            _ = try await store.append(AppendRequest(events: deposits([50], to: a)))
            let bad = try await store.append(AppendRequest(events: [NewEvent(streamID: a, eventType: "MoneyDeposited", payload: Data("{not json".utf8))]))
            let (executor, _) = executor(store)
            let error = try await requireStoreError(.undecodableEvent) {
                try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 10))
            }
            try requireEqual(error.streamID, a, "stream named")
            try requireEqual(error.globalPosition, bad.events[0].globalPosition, "position named")
            try require(!error.description.contains("not json"), "payload not printed: \(error)")
        },
        Case("events of other vocabularies are skipped by the fold but count for the version") { store in
            let a = SampleBank.account(1), b = SampleBank.account(2)
            _ = try await store.append(AppendRequest(events: deposits([50], to: a) + [NewEvent(streamID: a, eventType: "SomethingElse", payload: Data("[1]".utf8))]))
            let (executor, _) = executor(store)
            let result = try await executor.execute(SampleBank.Transfer(from: a, to: b, amount: 20))
            try requireEqual(result.outcome, .committed, "outcome")
            try requireEqual(result.streamVersions[a], 3, "a after two stored events and the withdrawal")
        },
        Case("a command that writes to a stream it did not declare or discover fails and writes nothing") { store in
            struct Stray: Command {
                var readStreams: [StreamID] { [SampleBank.account(1)] }
                var initialState: Int { 0 }
                func apply(_ state: inout Int, _ event: SampleBank.Event) {}
                func handle(_ state: Int, context: CommandContext) throws -> [StreamWrite<SampleBank.Event>] {
                    [try context.write(.deposited(amount: 1), to: SampleBank.account(9))]
                }
            }
            let (executor, _) = executor(store)
            let error = try await requireStoreError(.undeclaredStream) { try await executor.execute(Stray()) }
            try requireEqual(error.streamID, SampleBank.account(9), "stream named")
            try requireEqual(try await store.readAll(after: 0, limit: 10), [], "nothing written")
        },
    ]
}

// MARK: - Reading what is new, and the executor's stream cache

extension EventStoreContract {
    static let cachedExecution: [Case] = [
        Case("a read after known versions returns only the newer events, in global order, and every stream's version") { store in
            let a = stream("known-a"), b = stream("known-b"), c = stream("known-c")
            _ = try await store.append(AppendRequest(events: deposits([1], to: a) + deposits([10], to: b)))
            _ = try await store.append(AppendRequest(events: deposits([2], to: a)))
            _ = try await store.append(AppendRequest(events: deposits([20], to: b) + deposits([3], to: a)))
            let whole = try await store.read([a, b, c])
            let newer = try await store.read([a, b, c], after: [a: 1, b: 2])
            try requireEqual(newer.events, whole.events.filter { $0.streamID == a && $0.streamVersion > 1 }, "a's events 2 and 3 only")
            try requireEqual(newer.versions, [a: 3, b: 2, c: 0], "every stream's version")
            let nothing = try await store.read([a, b], after: [a: 3, b: 2])
            try requireEqual(nothing.events, [], "nothing newer")
            try requireEqual(nothing.versions, [a: 3, b: 2], "versions kept")
            let all = try await store.read([b, a], after: [:])
            try requireEqual(all.events, whole.events.filter { $0.streamID != c }, "no known versions: the whole streams")
        },
        Case("an executor with a stream cache sees what other writers appended and decides as one without") { store in
            let a = SampleBank.account(1), b = SampleBank.account(2)
            let (plain, _) = executor(store)
            let cache = StreamCache()
            let cached = CommandExecutor(store: store, cache: cache, clock: ImmediateClock(), unitRandom: { 0.5 })
            _ = try await cached.execute(SampleBank.OpenAccount(account: a, owner: "ann", initialDeposit: 100))
            _ = try await cached.execute(SampleBank.Transfer(from: a, to: b, amount: 30))
            _ = try await plain.execute(SampleBank.Transfer(from: a, to: b, amount: 20))
            _ = try await store.append(AppendRequest(events: deposits([70], to: a)))
            // 100 - 30 - 20 + 70 = 120: only enough if the cached executor saw both other writes.
            let result = try await cached.execute(SampleBank.Transfer(from: a, to: b, amount: 120))
            try requireEqual(result.outcome, .committed, "the transfer saw every write")
            try requireEqual(result.streamVersions, [a: 6, b: 3], "versions after it")
            let refused = try await cached.execute(SampleBank.Transfer(from: a, to: b, amount: 1))
            try requireEqual(refused.outcome, .noOp, "nothing left to move, as the store says")
            let ledger = try SampleBank.ledger(of: try await store.read([a, b]).events)
            try requireEqual(ledger.balances, [a: 0, b: 170], "balances")
            try require(cache.statistics.hits >= 4, "the cache served the later commands: \(cache.statistics)")
        },
        Case("an executor that trusts its cache decides again, on a fresh read, when another writer got in first") { store in
            let a = SampleBank.account(1), b = SampleBank.account(2)
            let cache = StreamCache(verification: .onAppend)
            let cached = CommandExecutor(store: store, cache: cache, clock: ImmediateClock(), unitRandom: { 0.5 })
            _ = try await cached.execute(SampleBank.OpenAccount(account: a, owner: "ann", initialDeposit: 100))
            for _ in 0..<3 { _ = try await cached.execute(SampleBank.Transfer(from: a, to: b, amount: 10)) }
            try require(cache.statistics.readsSkipped >= 1, "a command was decided without reading: \(cache.statistics)")
            _ = try await store.append(AppendRequest(events: deposits([5], to: a)))
            // 70 left in the cache, enough: the decision is made, and its append conflicts.
            let result = try await cached.execute(SampleBank.Transfer(from: a, to: b, amount: 70))
            try requireEqual(result.outcome, .committed, "committed on the fresh state")
            try requireEqual(result.attempts, 2, "decided twice")
            try requireEqual(result.streamVersions, [a: 7, b: 4], "versions")
            let ledger = try SampleBank.ledger(of: try await store.read([a, b]).events)
            try requireEqual(ledger.balances, [a: 5, b: 100], "balances")
        },
    ]
}
