import AMQP
import EventCore
import Fleet
import FleetSimulation
import FleetTestSupport
import Foundation
import Logging
import OrderFulfillment
import Synchronization
import Testing

/// The operator's tools without a broker: filters, headers, times, offsets.
@Suite("Operations: parsing and headers")
struct OperationsParsingTests {
    @Test func deadLetterFiltersParseAndMatch() throws {
        let filter = try DeadLetterFilter(parsing: "type=PaymentConfirmed, reason=retries-exhausted,queue=fleet.orders")
        #expect(filter == DeadLetterFilter(eventType: "PaymentConfirmed", reason: "retries-exhausted", sourceQueue: "fleet.orders"))
        #expect(try DeadLetterFilter(parsing: "") == DeadLetterFilter())
        for bad in ["colour=red", "type", "=x", "type="] {
            #expect(throws: OperationsError.self) { try DeadLetterFilter(parsing: bad) }
        }
        var properties = AMQPProperties.persistent
        properties.type = "PaymentConfirmed"
        properties.headers = [Envelope.Header.error: "retries-exhausted", Envelope.Header.sourceQueue: "fleet.orders"]
        let letter = DeadLetter(properties: properties, body: Data("{}".utf8))
        #expect(filter.matches(letter))
        #expect(!DeadLetterFilter(reason: "unknown-type").matches(letter))
    }

    @Test func requeueStripsEveryFailureHeaderAndKeepsTheRest() {
        var properties = AMQPProperties.persistent
        properties.messageID = "m-1"
        properties.headers = [
            "x-death": .array([.table(["queue": "fleet.orders", "reason": "rejected"])]), "x-first-death-queue": "fleet.orders",
            Envelope.Header.error: "retries-exhausted", Envelope.Header.errorDetail: "store down", Envelope.Header.worker: "w-1",
            Envelope.Header.failedAt: "2026-01-01T00:00:00Z", Envelope.Header.sourceQueue: "fleet.orders",
            Envelope.Header.sourceRoutingKey: "payment.confirmed", Envelope.Header.attempt: .int32(5),
            Envelope.Header.causationID: "c-1", Envelope.Header.traceparent: "00-abc-def-01",
        ]
        let cleaned = DeadLetter.requeueProperties(properties)
        #expect(cleaned.messageID == "m-1")
        #expect(cleaned.headers == [Envelope.Header.causationID: "c-1", Envelope.Header.traceparent: "00-abc-def-01"])
        // A message the broker dead-lettered names its source queue only in x-death.
        var brokerDeadLettered = AMQPProperties()
        brokerDeadLettered.headers = ["x-death": .array([.table(["queue": "fleet.bookings", "reason": "delivery_limit"])])]
        let letter = DeadLetter(properties: brokerDeadLettered, body: Data())
        #expect(letter.sourceQueue == "fleet.bookings")
        #expect(letter.reason == "delivery_limit")
    }

    @Test func operatorTimesAndStreamOffsets() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(try OperatorTime.parse("2h", now: now) == now.addingTimeInterval(-7200))
        #expect(try OperatorTime.parse("2026-03-01T12:00:00Z") == Date(timeIntervalSince1970: 1_772_366_400))
        #expect(try OperatorTime.parse("2026-03-01") == Date(timeIntervalSince1970: 1_772_323_200))
        for bad in ["yesterday", "12x", "2026-13-45", ""] {
            #expect(throws: OperationsError.self) { try OperatorTime.parse(bad) }
        }
        #expect(try StreamReplay.Offset(parsing: "first") == .first)
        #expect(try StreamReplay.Offset(parsing: "42") == .offset(42))
        #expect(throws: OperationsError.self) { try StreamReplay.Offset(parsing: "-1") }
        #expect(throws: OperationsError.self) {
            try StoreReplaySelection(since: now, until: now.addingTimeInterval(-1)).validate()
        }
    }
}

/// Replays and dead-letter requeues against a real broker and store.
@Suite("Operations: replay and dead letters", .serialized, .timeLimit(.minutes(10)))
struct OperationsReplayTests {
    /// How many events the checkpoint test replays.
    static let replayedEvents = Int(ProcessInfo.processInfo.environment["FLEET_OPS_EVENTS"] ?? "") ?? 10_000
    /// How many events the fleet test replays (three times over: workload, store, stream). 10,000 passes in
    /// about 200 s on a shared 2-core machine; the default keeps the suite near a minute.
    /// `FLEET_OPS_FLEET_EVENTS=10000` runs the issue's full scale.
    static let fleetReplayedEvents = Int(ProcessInfo.processInfo.environment["FLEET_OPS_FLEET_EVENTS"] ?? "") ?? 3_000
    /// How many dead letters the fleet test requeues.
    static let deadLetters = Int(ProcessInfo.processInfo.environment["FLEET_OPS_DEAD_LETTERS"] ?? "") ?? 1_000

    static func temporaryStorePath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("fleet-ops-\(UUID().uuidString).sqlite").path
    }

    static func removeStore(_ path: String) {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }

    /// A source store with `count` capacity announcements, as a provider's service would store them.
    static func announcementStore(_ path: String, count: Int) async throws -> StoreConnection {
        let store = try await StoreConnection.open(path, maximumPayloadBytes: 1 << 20, logger: Logger(label: "test.ops"))
        for start in stride(from: 0, to: count, by: 500) {
            let events = (start..<min(count, start + 500)).map { index in
                NewEvent(streamID: try! StreamID("provider-\(index % 7)"), eventType: TravelCapacityRequest.eventType,
                         payload: Data(#"{"resource_kind":"hotel","resource_id":"ops-hotel-\#(index)","units":2}"#.utf8),
                         metadata: EventMetadata(correlationID: "ops-hotel-\(index)"))
            }
            _ = try await store.store.append(AppendRequest(events: events))
        }
        return store
    }

    /// Declares a topic exchange and a queue bound to all it routes: where a replay under test publishes.
    static func declareReplayTarget(_ prefix: String, on connection: AMQPConnection) async throws -> (exchange: String, queue: String) {
        let exchange = TestBroker.uniqueName(prefix), queue = TestBroker.uniqueName("\(prefix).received")
        try await connection.declare(ExchangeDeclaration(name: exchange, type: "topic", durable: false, autoDelete: false))
        try await connection.declare(QueueDeclaration(name: queue, durable: false))
        try await connection.declare(BindingDeclaration(source: exchange, destination: queue, routingKey: "#"))
        return (exchange, queue)
    }

    /// Deletes a replay target, closes its connection and runs `then`, in the background (for a `defer`).
    static func removeReplayTarget(_ target: (exchange: String, queue: String), connection: AMQPConnection,
                                   then: @escaping @Sendable () async -> Void = {}) {
        Task {
            _ = try? await connection.deleteQueue(target.queue)
            try? await connection.deleteExchange(target.exchange)
            await connection.close()
            await then()
        }
    }

    /// Every event of a store.
    static func allEvents(_ store: any EventStore) async throws -> [StoredEvent] {
        var events: [StoredEvent] = [], position = 0
        while let page = Optional(try await store.readAll(after: position, limit: 5000)), let last = page.last {
            events += page
            position = last.globalPosition
        }
        return events
    }

    /// Message ids of the messages in `queue`: taken until `expected` came, and a little longer to see any extra.
    static func receivedMessageIDs(_ connection: AMQPConnection, queue: String, expected: Int) async throws -> [String] {
        let consumer = try await connection.consume(queue: queue, prefetch: 1000, noAck: true)
        let received = ReceivedIDs()
        let reader = Task {
            for try await delivery in consumer { received.append(delivery.properties.messageID ?? "") }
        }
        _ = try await TestBroker.eventually(60) { received.count >= expected }
        try await Task.sleep(for: .milliseconds(500))
        try await consumer.cancel()
        _ = await reader.result
        return received.all
    }

    @Test func aStoreReplayInterruptedHalfWayResumesFromItsCheckpointWithoutGapsOrDuplicates() async throws {
        let total = Self.replayedEvents
        let path = Self.temporaryStorePath()
        let checkpoint = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-ops-\(UUID().uuidString).checkpoint")
        defer {
            Self.removeStore(path)
            try? FileManager.default.removeItem(at: checkpoint)
        }
        let source = try await Self.announcementStore(path, count: total)
        let connection = try await TestBroker.connect()
        let (exchange, queue) = try await Self.declareReplayTarget("ops.replay", on: connection)
        defer { Self.removeReplayTarget((exchange, queue), connection: connection) { await source.close() } }
        let replay = StoreReplay(selection: StoreReplaySelection(fromPosition: 1), target: ReplayTarget(exchange: exchange),
                                 checkpoint: checkpoint)

        // Bad input touches nothing: a position past the end, no checkpoint written, nothing published.
        var pastEnd = replay
        pastEnd.selection.fromPosition = total + 10
        pastEnd.checkpoint = checkpoint
        await #expect(throws: OperationsError.self) { try await pastEnd.prepare(store: source.store) }
        #expect(!FileManager.default.fileExists(atPath: checkpoint.path))

        // The first run stops half way, as SIGINT stops the CLI: after the batch in flight is confirmed.
        let publisher = try await connection.makePublisher()
        let half = total / 2
        let seen = ProgressCounter()
        let first = try await replay.run(store: source.store, publisher: publisher, shouldStop: { seen.value >= half }) { seen.value = $0.published }
        #expect(first.stoppedEarly)
        #expect(first.published >= half && first.published < total)
        let saved = try #require(try ReplayCheckpoint.load(from: checkpoint))
        #expect(saved.lastConfirmedPosition == first.lastPosition)
        #expect(!saved.finished)

        // A checkpoint belongs to its selection: another one refuses it.
        var other = replay
        other.selection = StoreReplaySelection(fromPosition: 2)
        await #expect(throws: OperationsError.self) { try await other.prepare(store: source.store) }

        // The second run resumes after the checkpoint and finishes.
        let second = try await replay.run(store: source.store, publisher: publisher)
        #expect(!second.stoppedEarly)
        #expect(second.resumedAfter == saved.lastConfirmedPosition)
        #expect(first.published + second.published == total)
        #expect(try ReplayCheckpoint.load(from: checkpoint)?.finished == true)
        await publisher.close()

        let ids = try await Self.receivedMessageIDs(connection, queue: queue, expected: total)
        let stored = Set(try await Self.allEvents(source.store).map(\.id.description))
        #expect(ids.count == total, "every event exactly once")
        #expect(Set(ids) == stored, "no gap")
    }

    @Test func replaysFromTheStoreAndTheStreamHaveNoNewEffectAndRequeuedDeadLettersAreProcessedOnce() async throws {
        let total = Self.fleetReplayedEvents, deadLetterCount = Self.deadLetters
        let schema = "ops_\(UUID().uuidString.prefix(8).lowercased())"
        let workerStoreURL = (ProcessInfo.processInfo.environment["POSTGRES_URL"] ?? "postgres://fleet:fleet@127.0.0.1:5432/fleet") + "?schema=\(schema)"
        let sourcePath = Self.temporaryStorePath()
        defer { Self.removeStore(sourcePath) }
        try await FleetEndToEndTests.Fleet.with(storeURL: workerStoreURL) { fleet in
            try await Self.replayAndRequeue(fleet: fleet, workerStoreURL: workerStoreURL, sourcePath: sourcePath, total: total, deadLetterCount: deadLetterCount)
        }
    }

    static func replayAndRequeue(
        fleet: FleetEndToEndTests.Fleet, workerStoreURL: String, sourcePath: String, total: Int, deadLetterCount: Int
    ) async throws {
        let topology = try Topology.load(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("topology.json"))
        let source = try await Self.announcementStore(sourcePath, count: total)
        let admin = try await AMQPConnection.connect(url: fleet.amqpURL)
        try fleet.startWorker()
        try await fleet.waitUntilConsuming(1, topology: topology, connection: admin)
        let workerStore = try await StoreConnection.open(workerStoreURL, maximumPayloadBytes: 1 << 20, logger: Logger(label: "test.ops"))
        defer {
            Task {
                await workerStore.close()
                await source.close()
                await admin.close()
            }
        }

        // The worker store's events, read incrementally (appends only ever come at higher positions).
        var events: [StoredEvent] = []
        /// Waits until the bookings queue is empty and the worker store stops growing; returns its events.
        func settledEvents(atLeastSources expected: Int) async throws -> [StoredEvent] {
            var stableSince = Date()
            var lastCount = -1
            let settled = try await TestBroker.eventually(240) {
                let ready = try await admin.declare(QueueDeclaration(name: "fleet.bookings"), passive: true).messageCount
                while let page = Optional(try await workerStore.store.readAll(after: events.last?.globalPosition ?? 0, limit: 5000)),
                      !page.isEmpty {
                    events += page
                }
                if events.count != lastCount {
                    lastCount = events.count
                    stableSince = Date()
                }
                let sources = Set(events.compactMap(\.metadata.sourceMessageID)).count
                return ready == 0 && sources >= expected && Date().timeIntervalSince(stableSince) > 2
            }
            try #require(settled, "the worker did not settle; logs in \(FileManager.default.temporaryDirectory.path)/\(fleet.vhost)-worker-*.log")
            return events
        }

        // The workload: the provider's stored announcements published once, through the replay itself.
        let publisher = try await admin.makePublisher()
        let target = ReplayTarget(exchange: "domain.events", routingKey: "hotel.capacity")
        let workload = try await StoreReplay(selection: StoreReplaySelection(fromPosition: 1), target: target).run(store: source.store, publisher: publisher)
        #expect(workload.published == total)
        let processed = try await settledEvents(atLeastSources: total)
        let perAnnouncement = processed.count / total
        #expect(processed.count == perAnnouncement * total && perAnnouncement >= 1)

        // Replaying every stored event again: duplicates, absorbed.
        let again = try await StoreReplay(selection: StoreReplaySelection(fromPosition: 1), target: target).run(store: source.store, publisher: publisher)
        #expect(again.published == total)
        #expect(try await settledEvents(atLeastSources: total).count == processed.count, "a store replay had an effect")

        // Replaying the stream queue (it holds both publications) into the processing queue: absorbed too.
        let fromStream = try await StreamReplay(stream: "domain.events.stream", target: "fleet.bookings", offset: .first, idleTimeout: .seconds(2))
            .run(connection: admin)
        #expect(fromStream.published == 2 * total)
        #expect(try await settledEvents(atLeastSources: total).count == processed.count, "a stream replay had an effect")

        // Dead letters as the worker leaves them when its retries ran out while the store was away.
        var deadIDs: Set<String> = []
        for index in 0..<deadLetterCount {
            let id = UUID().uuidString.lowercased()
            deadIDs.insert(id)
            var properties = AMQPProperties.persistent
            properties.messageID = id
            properties.type = TravelCapacityRequest.eventType
            properties.contentType = "application/json"
            properties.headers = [
                Envelope.Header.error: "retries-exhausted", Envelope.Header.errorDetail: "store unavailable",
                Envelope.Header.worker: "w-gone", Envelope.Header.failedAt: "2026-01-01T00:00:00Z",
                Envelope.Header.sourceQueue: "fleet.bookings", Envelope.Header.sourceRoutingKey: "hotel.capacity",
                Envelope.Header.attempt: .int32(20),
                "x-death": .array([.table(["queue": "fleet.bookings", "reason": "rejected", "count": .int64(1), "exchange": "domain.events"])]),
            ]
            try await publisher.publish(Data(#"{"resource_kind":"hotel","resource_id":"ops-dead-\#(index)","units":1}"#.utf8),
                                        exchange: topology.fleet.deadLetterExchange, routingKey: "hotel.capacity", properties: properties)
        }
        let dlq = DeadLetterQueue(connection: admin, queue: topology.fleet.deadLetterQueue)
        #expect(try await TestBroker.eventually(30) { try await dlq.count() == deadLetterCount })

        // Reading loses nothing; a dry run moves nothing; a bad target touches nothing.
        let listed = try await dlq.list(limit: 10)
        #expect(listed.count == 10 && listed.allSatisfy { $0.reason == "retries-exhausted" && $0.sourceQueue == "fleet.bookings" })
        _ = try await dlq.show(messageID: listed[3].messageID)
        await #expect(throws: OperationsError.self) { try await dlq.show(messageID: "no-such-message") }
        let dry = try await dlq.requeue(DeadLetterRequeueRequest(dryRun: true))
        #expect(dry.requeued == ["fleet.bookings": deadLetterCount])
        await #expect(throws: OperationsError.self) { try await dlq.requeue(DeadLetterRequeueRequest(target: "no.such.queue")) }
        let nothing = try await dlq.requeue(DeadLetterRequeueRequest(filter: DeadLetterFilter(reason: "unknown-type")))
        #expect(nothing.requeuedCount == 0 && nothing.examined == deadLetterCount)
        #expect(try await TestBroker.eventually(10) { try await dlq.count() == deadLetterCount })

        // The cause is fixed (the store is back): requeue them all.
        let report = try await dlq.requeue(DeadLetterRequeueRequest())
        #expect(report.requeued == ["fleet.bookings": deadLetterCount])
        #expect(report.failures.isEmpty)
        let after = try await settledEvents(atLeastSources: total + deadLetterCount)
        #expect(after.count == processed.count + perAnnouncement * deadLetterCount, "every requeued dead letter had one effect")
        var effects: [String: Int] = [:]
        for event in after { if let source = event.metadata.sourceMessageID, deadIDs.contains(source) { effects[source, default: 0] += 1 } }
        #expect(effects.count == deadLetterCount && effects.values.allSatisfy { $0 == perAnnouncement }, "each dead letter processed exactly once")
        #expect(try await dlq.count() == 0, "the dead-letter queue is empty")
        await publisher.close()
    }
}

/// The last progress a replay reported, read by its stop condition.
final class ProgressCounter: Sendable {
    private let current = Mutex(0)
    var value: Int {
        get { current.withLock { $0 } }
        set { current.withLock { $0 = newValue } }
    }
}

/// Message ids a consumer received.
final class ReceivedIDs: Sendable {
    private let ids = Mutex<[String]>([])
    func append(_ id: String) { ids.withLock { $0.append(id) } }
    var count: Int { ids.withLock { $0.count } }
    var all: [String] { ids.withLock { $0 } }
}
