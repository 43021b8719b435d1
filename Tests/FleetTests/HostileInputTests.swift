import AMQP
import EventCore
import EventCoreTestKit
import Fleet
import FleetTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import OrderFulfillment
import Processes
import Testing

/// Hostile input: the corpus of ``HostileCorpus`` and its seeded mutations through the envelope decoder and the
/// handlers' payload decoding, hostile topology files through the loader, and the corpus through a real worker.
@Suite("Hostile input", .serialized, .timeLimit(.minutes(10)))
struct HostileInputTests {
    static let topology: Topology = {
        do {
            return try Topology.load(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("topology.json"))
        } catch {
            fatalError("topology.json does not load: \(error)")
        }
    }()

    static let knownReasons: Set<String> = [
        "malformed-body", "body-too-large", "unsupported-content-type", "missing-type", "unknown-type", "missing-message-id",
        "missing-correlation-id", "invalid-payload", "invalid-header", "correlation-mismatch",
    ]

    static func route(_ queue: String) -> Route {
        topology.fleet.routes.first { $0.queue == queue }!
    }

    /// What the fleet does with `message` without a store: the decoder's verdict, then for the order queues the
    /// router's (nil when it would be handled), for the others the payload decoding their handlers do first.
    /// `handled` is false when the outcome depends on the store (a saga or a timeout that decodes).
    static func verdict(_ message: HostileMessage, now: Date = Date()) -> (reason: String?, detail: String, decidedWithoutStore: Bool) {
        let envelope: Envelope
        do {
            envelope = try EnvelopeDecoder(route: route(message.queue)).decode(body: message.body, properties: message.properties,
                                                                                routingKey: message.routingKey, queue: message.queue, now: now)
        } catch {
            return (error.code.rawValue, error.detail, true)
        }
        switch message.queue {
        case HostileCorpus.orders, HostileCorpus.legacy:
            let incoming = IncomingEvent(eventType: envelope.eventType, payload: envelope.body, messageID: envelope.messageID, receivedAt: now,
                                         metadata: EventMetadata(correlationID: envelope.correlationID))
            do {
                _ = try OrderFulfillmentRouter().route(incoming)
                return (nil, "", true)
            } catch {
                let reason = switch error.code {
                case .unknownEventType: "unknown-type"
                case .invalidPayload: "invalid-payload"
                case .correlationMismatch: "correlation-mismatch"
                }
                return (reason, error.message, true)
            }
        case HostileCorpus.timeouts:
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .millisecondsSince1970
            do {
                _ = try decoder.decode(ScheduledTimeout.self, from: envelope.body)
            } catch {
                return (nil, "\(error)", false)
            }
            return (nil, "", false)
        default:
            do {
                _ = try JSONDecoder().decode(TravelBookingSaga.self, from: envelope.body)
            } catch {
                return (nil, "\(error)", false)
            }
            return (nil, "", false)
        }
    }

    // MARK: - Envelopes

    @Test func everyNamedCaseGetsItsReason() {
        let cases = HostileCorpus.named(tag: "unit")
        #expect(cases.count > 50)
        for message in cases {
            let (reason, detail, decided) = Self.verdict(message)
            guard decided else { continue }
            #expect(reason == message.expectedReason, "\(message.name): \(reason ?? "handled") (\(detail.prefix(300)))")
            if reason != nil { #expect(!detail.isEmpty, "\(message.name) has no detail") }
        }
    }

    /// Thousands of seeded mutations of valid messages of every queue: each decodes or is refused with a known
    /// reason and a detail, and what decodes goes through the payload decoding of its handler without a crash.
    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func seededMutationsAreDecodedOrRefusedWithAReason(seed: UInt64) {
        var refused: [String: Int] = [:]
        var decoded = 0
        for message in HostileCorpus.mutations(seed: seed, count: 1_500) {
            let (reason, detail, _) = Self.verdict(message)
            if let reason {
                refused[reason, default: 0] += 1
                #expect(Self.knownReasons.contains(reason), "\(message.name): \(reason)")
                #expect(!detail.isEmpty, "\(message.name): \(reason) without a detail")
                #expect(detail.utf8.count < 2_000, "\(message.name): a detail of \(detail.utf8.count) bytes")
            } else {
                decoded += 1
            }
        }
        // The mutations reach every stage: some decode, many are refused, and for several reasons.
        #expect(decoded > 50, "\(refused)")
        #expect(refused.values.reduce(0, +) > 500, "\(refused)")
        #expect(refused.count >= 5, "\(refused)")
    }

    @Test func theGeneratorIsDeterministic() {
        let first = HostileCorpus.mutations(seed: 9, count: 200), second = HostileCorpus.mutations(seed: 9, count: 200)
        #expect(first.map(\.body) == second.map(\.body))
        // Compared as text: a NaN header is never equal to itself.
        func text(_ properties: AMQPProperties) -> String {
            var without = properties
            without.headers = nil
            return "\(without) " + (properties.headers ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        }
        #expect(first.map { text($0.properties) } == second.map { text($0.properties) })
        #expect(HostileCorpus.mutations(seed: 10, count: 200).map(\.body) != first.map(\.body))
    }

    @Test func deepNestingIsRefusedBeforeTheParser() {
        for depth in [65, 1_000, 100_000, 170_000] {
            let body = HostileCorpus.nested(depth, open: #"{"a":"#, close: "}")
            do {
                _ = try EnvelopeDecoder(route: Self.route(HostileCorpus.orders)).decode(body: body, properties: HostileCorpus.properties(type: "OrderPlaced", id: "d"),
                                                                                         routingKey: "order.placed", queue: HostileCorpus.orders)
                Issue.record("\(depth) levels were accepted")
            } catch {
                #expect(error.code == .malformedBody)
                #expect(error.detail.contains("deeper than 64"), "\(error)")
            }
        }
    }

    @Test func fleetHeadersOfTheWrongTypeAreRefusedByName() throws {
        let decoder = EnvelopeDecoder(route: Self.route(HostileCorpus.orders))
        let body = HostileCorpus.json(["order_id": "o", "payment_id": "p"])
        for (name, value) in [(Envelope.Header.attempt, AMQPFieldValue.string("1")), (Envelope.Header.dueAt, .double(1e12)),
                              (Envelope.Header.streamID, .int64(1)), (Envelope.Header.globalPosition, .table([:]))] {
            do {
                _ = try decoder.decode(body: body, properties: HostileCorpus.properties(type: "PaymentConfirmed", id: "m", headers: [name: value]),
                                       routingKey: "payment.confirmed", queue: HostileCorpus.orders)
                Issue.record("\(name) = \(value) was accepted")
            } catch {
                #expect(error.code == .invalidHeader)
                #expect(error.detail.hasPrefix(name), "\(error)")
            }
        }
        // The retry count a worker writes, and a due time in the past (due now), are read as they are.
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let envelope = try decoder.decode(body: body, properties: HostileCorpus.properties(type: "PaymentConfirmed", id: "m", headers: [
            Envelope.Header.attempt: .int32(3), Envelope.Header.dueAt: .int64(-1_000),
        ]), routingKey: "payment.confirmed", queue: HostileCorpus.orders, now: now)
        #expect(envelope.attempt == 3)
        #expect(envelope.dueAt == Date(timeIntervalSince1970: -1))
        // A due time within the horizon is kept; beyond it is refused.
        let soon = Int64(now.addingTimeInterval(86_400 * 30).timeIntervalSince1970 * 1000)
        #expect(try decoder.decode(body: body, properties: HostileCorpus.properties(type: "PaymentConfirmed", id: "m", headers: [Envelope.Header.dueAt: .int64(soon)]),
                                   routingKey: "payment.confirmed", queue: HostileCorpus.orders, now: now).dueAt != nil)
        #expect(throws: EnvelopeError.self) {
            try EnvelopeDecoder(route: Self.route(HostileCorpus.orders), maximumDelay: 86_400).decode(
                body: body, properties: HostileCorpus.properties(type: "PaymentConfirmed", id: "m", headers: [Envelope.Header.dueAt: .int64(soon)]),
                routingKey: "payment.confirmed", queue: HostileCorpus.orders, now: now)
        }
    }

    /// A message about order A that names order B: the order router refuses it; a foreign message's correlation
    /// id always comes from its body, so a forged `correlation_id` property there cannot redirect it.
    @Test func aMessageClaimingAnotherProcessIsRefusedOrHandledForItsPayloadOnly() throws {
        let router = OrderFulfillmentRouter()
        func incoming(correlation: String?) -> IncomingEvent {
            IncomingEvent(eventType: "PaymentConfirmed", payload: HostileCorpus.json(["order_id": "A", "payment_id": "p"]), messageID: "m",
                          receivedAt: Date(), metadata: EventMetadata(correlationID: correlation))
        }
        #expect(throws: RoutingError(.correlationMismatch, eventType: "PaymentConfirmed",
                                     #"the correlation id "B" names another order than the payload's "A""#)) {
            try router.route(incoming(correlation: "B"))
        }
        let processA = try OrderFulfillmentProcess.processID(orderID: "A")
        // No correlation id, an empty one, the order's or its process's: handled for A, with A's correlation id.
        for (correlation, stamped) in [(nil, "A"), ("", "A"), ("A", "A"), (processA.description, processA.description)] {
            let routed = try #require(try router.route(incoming(correlation: correlation)))
            #expect(routed.processID == processA)
            #expect(routed.options.metadata.correlationID == stamped)
        }

        var properties = AMQPProperties()
        properties.correlationID = "B"
        properties.messageID = "forged"
        let envelope = try EnvelopeDecoder(route: Self.route(HostileCorpus.legacy)).decode(
            body: HostileCorpus.json(["order_id": "A", "settlement_id": "s-1"]), properties: properties,
            routingKey: "settlement.completed", queue: HostileCorpus.legacy)
        #expect(envelope.correlationID == "A")
        #expect(envelope.messageID == "PaymentConfirmed:s-1")
    }

    @Test func aHugeHeaderTableIsReadWithoutTrouble() throws {
        var headers = HostileCorpus.wideHeaders(bytes: 2_000_000)
        headers[Envelope.Header.attempt] = .int32(1)
        let envelope = try EnvelopeDecoder(route: Self.route(HostileCorpus.orders)).decode(
            body: HostileCorpus.json(["order_id": "o", "payment_id": "p"]), properties: HostileCorpus.properties(type: "PaymentConfirmed", id: "m", headers: headers),
            routingKey: "payment.confirmed", queue: HostileCorpus.orders)
        #expect(envelope.attempt == 1)
    }

    /// Header tables nested deeper than ``AMQPProperties/maximumHeaderNesting`` come back cut off (`.void` where
    /// the deeper levels were), so that no copy of them can exhaust a stack.
    @Test func headersNestedTooDeeplyAreCutOffWhenRead() async throws {
        let connection = try await TestBroker.connect()
        let queue = TestBroker.uniqueName("nesting")
        _ = try await connection.declare(QueueDeclaration(name: queue, durable: false))
        var nested: AMQPFieldValue = "bottom"
        for level in 0..<40 { nested = level.isMultiple(of: 2) ? .array([nested]) : .table(["t": nested]) }
        var properties = AMQPProperties()
        properties.headers = ["x-nest": nested, "x-flat": "kept"]
        let publisher = try await connection.makePublisher()
        try await publisher.publish(Data("{}".utf8), exchange: "", routingKey: queue, properties: properties)
        let delivery = try #require(try await connection.get(queue: queue, noAck: true))
        _ = try await connection.deleteQueue(queue)
        await connection.close()
        #expect(delivery.properties.headers?["x-flat"] == "kept")
        var depth = 1
        var value = try #require(delivery.properties.headers?["x-nest"])
        while true {
            if let array = value.arrayValue, let first = array.first { value = first } else if let table = value.tableValue, let inner = table["t"] { value = inner } else { break }
            depth += 1
        }
        #expect(depth == AMQPProperties.maximumHeaderNesting)
        #expect(value == .void)
    }

    // MARK: - Topology files

    static let topologyData: Data = (try? Data(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("topology.json"))) ?? Data()

    static func expectRefusedOrLoaded(_ data: Data, _ name: String) -> TopologyError? {
        do {
            _ = try Topology.decode(data, source: "hostile.json")
            return nil
        } catch {
            #expect(!error.entry.isEmpty && !error.problem.isEmpty, "\(name): \(error)")
            #expect(error.problem.utf8.count < 4_000, "\(name): a problem of \(error.problem.utf8.count) bytes")
            return error
        }
    }

    @Test func hostileTopologyFilesAreRefusedWithTheProblemNamed() throws {
        let cases: [(String, Data, String)] = [
            ("empty", Data(), "malformed JSON"),
            ("not JSON", Data("exchanges:".utf8), "malformed JSON"),
            ("truncated", Self.topologyData.prefix(Self.topologyData.count / 2), "malformed JSON"),
            ("an array", Data("[]".utf8), "the file should be"),
            ("invalid UTF-8", Data([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D]), "not UTF-8"),
            ("100,000 levels of [", HostileCorpus.nested(100_000), "nested 100000 levels deep"),
            ("100,000 levels in the fleet section", Data((#"{"fleet":"# + String(repeating: #"{"a":"#, count: 100_000) + "1" + String(repeating: "}", count: 100_001)).utf8),
             "nested 100001 levels deep"),
            ("no fleet section", Data(#"{"exchanges":[],"queues":[]}"#.utf8), "has no \"fleet\" section"),
            ("exchanges a string", Data(#"{"exchanges":"x"}"#.utf8), "exchanges"),
            ("a NUL in a name", Data(#"{"exchanges":[{"name":"a\u0000b","type":"nope"}],"fleet":{}}"#.utf8), "fleet"),
        ]
        for (name, data, expected) in cases {
            let error = try #require(Self.expectRefusedOrLoaded(data, name), "\(name) loaded")
            #expect(error.description.contains(expected), "\(name): \(error)")
        }
    }

    /// Seeded mutations of `topology.json`, structural (a value replaced by one of the wrong type, an entry
    /// removed or duplicated) and byte-level: each loads or is refused with the entry and the problem.
    @Test(arguments: [11, 12] as [UInt64])
    func seededTopologyMutationsAreRefusedWithTheProblemNamed(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let original = try #require(try JSONSerialization.jsonObject(with: Self.topologyData) as? [String: Any])
        var refused = 0, loaded = 0
        var problems = Set<String>()
        for index in 0..<600 {
            let data: Data
            if index % 3 == 0 {
                let operation = random.below(5)
                data = HostileCorpus.mutate(Self.topologyData, operation: operation, random: &random)
            } else {
                let mutated = Self.mutate(original, random: &random, depth: 0)
                data = (try? JSONSerialization.data(withJSONObject: mutated, options: [.sortedKeys])) ?? Data()
            }
            if let error = Self.expectRefusedOrLoaded(data, "seed \(seed) case \(index)") {
                refused += 1
                problems.insert(String(error.problem.prefix(30)))
            } else {
                loaded += 1
            }
        }
        #expect(refused > 300, "loaded \(loaded)")
        #expect(problems.count > 10, "\(problems.sorted())")
    }

    static func mutate(_ value: Any, random: inout SplitMix64, depth: Int) -> Any {
        let replacements: [Any] = [NSNull(), true, 0, -1, 1e300, "", String(repeating: "q", count: 10_000), "amq.x", [Any](), [String: Any](), "a\u{0}b"]
        if let object = value as? [String: Any], !object.isEmpty {
            var copy = object
            let key = object.keys.sorted()[random.below(object.count)]
            switch random.below(6) {
            case 0: copy.removeValue(forKey: key)
            case 1: copy[key] = replacements[random.below(replacements.count)]
            default: copy[key] = mutate(object[key]!, random: &random, depth: depth + 1)
            }
            return copy
        }
        if let array = value as? [Any], !array.isEmpty {
            var copy = array
            let index = random.below(array.count)
            switch random.below(5) {
            case 0: copy.remove(at: index)
            case 1: copy.append(array[index])
            case 2: copy[index] = replacements[random.below(replacements.count)]
            default: copy[index] = mutate(array[index], random: &random, depth: depth + 1)
            }
            return copy
        }
        return replacements[random.below(replacements.count)]
    }
}

// MARK: - A real worker

extension HostileInputTests {
    /// The resident set of a process, from `/proc/<pid>/status`.
    static func residentBytes(of pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }, "no VmRSS in /proc/\(pid)/status")
        let kilobytes = try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? ""), "\(line)")
        return kilobytes * 1024
    }

    /// The hostile messages of one round (the same in every round): the named cases and a few hundred seeded
    /// mutations whose fate is known without a store.
    static let endToEndCorpus: [HostileMessage] = {
        // Without headers RabbitMQ 3.10 itself cannot take: a NaN or infinite double (its parser has no such
        // value) and a decimal routed to a stream queue (`domain.events.stream`); for either the broker closes the
        // publishing connection. The decoder unit tests have them.
        let generated = HostileCorpus.mutations(seed: 77, count: 1_500).filter { message in
            let (reason, _, decided) = verdict(message)
            let brokerRefuses = (message.properties.headers ?? [:]).values.contains { value in
                switch value {
                case .decimal: true
                case .double(let number): !number.isFinite
                case .float(let number): !number.isFinite
                default: false
                }
            }
            return decided && reason != nil && !brokerRefuses
        }.map { message in
            var message = message
            message.expectedReason = verdict(message).reason
            return message
        }
        return HostileCorpus.named(tag: "e2e") + generated.prefix(250)
    }()

    /// Gets every message of `queue` (acknowledging them).
    static func drain(_ queue: String, _ connection: AMQPConnection) async throws -> [AMQPDelivery] {
        var deliveries: [AMQPDelivery] = []
        while let delivery = try await connection.get(queue: queue) {
            try delivery.ack()
            deliveries.append(delivery)
        }
        return deliveries
    }

    /// Two identical rounds of the hostile corpus, interleaved with valid orders, through one `fleet worker` on
    /// SQLite: every hostile message is dead-lettered with the reason the decoder or handler gives in-process
    /// (or handled harmlessly: a notification for no order), every valid order starts its process, the worker
    /// stays ready, and its resident memory after the second round is not materially above the first.
    @Test func aWorkerDeadLettersTheHostileCorpusAndStaysReady() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-hostile-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let hostile = Self.endToEndCorpus
        // Plus one message with a header nested 20,000 levels deep, sent through the management API (a client
        // library could not encode it): before header nesting was cut off, it overflowed the worker's stack.
        let expectedDeadLetters = (hostile.compactMap { message in message.expectedReason.map { "\($0) \(message.queue)" } }
            + ["malformed-body \(HostileCorpus.orders)"]).sorted()
        let harmless = hostile.filter { $0.expectedReason == nil }
        #expect(hostile.count > 250 && harmless.count == 1)
        #expect(Set(expectedDeadLetters.map { String($0.prefix { $0 != " " }) }).count >= 9, "\(Set(expectedDeadLetters))")

        try await FleetEndToEndTests.Fleet.with(storeURL: path) { fleet in
            let port = TestPorts.free()
            let worker = try fleet.startWorker(extraArguments: ["--http-port", String(port)])
            let connection = try await AMQPConnection.connect(url: fleet.amqpURL)
            try await fleet.waitUntilConsuming(1, topology: Self.topology, connection: connection)
            let observed = "hostile.process-started"
            _ = try await connection.declare(QueueDeclaration(name: observed))
            try await connection.declare(BindingDeclaration(source: Self.topology.fleet.processEventsExchange, destination: observed, routingKey: "ProcessStarted"))
            let publisher = try await connection.makePublisher()

            var resident: [Int] = []
            for round in 1...2 {
                // Valid orders, among them ones with headers that look odd but are fine: a due time in the far
                // past (due now), a forged x-death, a retry count.
                var valid = (0..<20).map { HostileCorpus.orderPlaced("hostile-\(round)-\($0)", id: "hostile-\(round)-\($0)") }
                valid.append(HostileCorpus.orderPlaced("hostile-\(round)-past", id: "hostile-\(round)-past", headers: [Envelope.Header.dueAt: .int64(.min)]))
                valid.append(HostileCorpus.orderPlaced("hostile-\(round)-death", id: "hostile-\(round)-death", headers: [
                    "x-death": .array([.table(["queue": "fleet.orders", "reason": "expired", "count": .int64(1_000_000)])]),
                ]))
                valid.append(HostileCorpus.orderPlaced("hostile-\(round)-retried", id: "hostile-\(round)-retried", headers: [Envelope.Header.attempt: .int32(2)]))
                var messages: [AMQPMessage] = []
                for (index, message) in hostile.enumerated() {
                    messages.append(AMQPMessage(body: message.body, exchange: message.exchange, routingKey: message.routingKey, properties: message.properties))
                    if index % 12 == 0, let next = valid.dropFirst(index / 12).first {
                        messages.append(AMQPMessage(body: next.body, exchange: next.exchange, routingKey: next.routingKey, properties: next.properties))
                    }
                }
                for next in valid.dropFirst((hostile.count + 11) / 12) {
                    messages.append(AMQPMessage(body: next.body, exchange: next.exchange, routingKey: next.routingKey, properties: next.properties))
                }
                #expect(messages.count == hostile.count + valid.count)
                for (index, result) in await publisher.publish(contentsOf: messages).enumerated() {
                    #expect(throws: Never.self, "publishing message \(index) of round \(round)") { try result.get() }
                }
                try await Self.publishThroughManagement(vhost: fleet.vhost, exchange: "domain.events", routingKey: "payment.confirmed",
                                                        headers: #"{"x-nest": "# + String(repeating: "[", count: 20_000) + "1" + String(repeating: "]", count: 20_000) + "}",
                                                        body: "{not json")

                let settled = try await TestBroker.eventually(300) {
                    let deadLetters = try await connection.declare(QueueDeclaration(name: Self.topology.fleet.deadLetterQueue), passive: true).messageCount
                    let started = try await connection.declare(QueueDeclaration(name: observed), passive: true).messageCount
                    guard deadLetters >= UInt32(expectedDeadLetters.count), started >= UInt32(valid.count) else { return false }
                    for route in Self.topology.fleet.routes {
                        let state = try await connection.declare(QueueDeclaration(name: route.queue), passive: true)
                        if state.messageCount > 0 { return false }
                    }
                    return true
                }
                try #require(settled, "round \(round) did not settle; log in \(FileManager.default.temporaryDirectory.path)/\(fleet.vhost)-worker-1.log")
                #expect(worker.isRunning, "the worker died in round \(round)")

                let deadLetters = try await Self.drain(Self.topology.fleet.deadLetterQueue, connection)
                let reasons = deadLetters.map { delivery in
                    "\(delivery.properties.headers?[Envelope.Header.error]?.stringValue ?? "none") \(delivery.properties.headers?[Envelope.Header.sourceQueue]?.stringValue ?? "none")"
                }
                #expect(reasons.sorted() == expectedDeadLetters, "round \(round): \(Self.difference(reasons.sorted(), expectedDeadLetters))")
                #expect(deadLetters.allSatisfy { !($0.properties.headers?[Envelope.Header.errorDetail]?.stringValue ?? "").isEmpty })
                // The message whose headers would not fit with the failure headers added arrives without them.
                #expect(deadLetters.contains { ($0.properties.headers?[Envelope.Header.errorDetail]?.stringValue ?? "").contains("were dropped") })
                let started = try await Self.drain(observed, connection)
                #expect(Set(started.compactMap(\.properties.correlationID)) == Set(valid.map { $0.properties.correlationID! }),
                        "round \(round): processes started for \(started.compactMap(\.properties.correlationID).sorted())")

                let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/health/ready")!)
                #expect((response as? HTTPURLResponse)?.statusCode == 200, "round \(round): \(String(decoding: data, as: UTF8.self))")
                resident.append(try Self.residentBytes(of: worker.processIdentifier))
            }
            // A leak check with generous slack, not a measurement: an identical second round must not grow the
            // worker by more than a quarter or 16 MiB, whichever is more. Not under a sanitizer (`scripts/sanitize`
            // says which), whose allocator keeps freed memory in quarantine.
            if ProcessInfo.processInfo.environment["FLEET_SANITIZER"] == nil {
                #expect(resident[1] <= max(resident[0] + resident[0] / 4, resident[0] + (16 << 20)),
                        "resident memory grew from \(resident[0] >> 20) MiB to \(resident[1] >> 20) MiB")
            }
            await connection.close()
        }
    }

    /// Publishes through RabbitMQ's management API, which takes headers as JSON and nests them as deep as asked.
    static func publishThroughManagement(vhost: String, exchange: String, routingKey: String, headers: String, body: String) async throws {
        let port = ProcessInfo.processInfo.environment["RABBITMQ_MANAGEMENT_PORT"] ?? "15672"
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/api/exchanges/\(vhost)/\(exchange)/publish")!)
        request.httpMethod = "POST"
        request.setValue("Basic " + Data("guest:guest".utf8).base64EncodedString(), forHTTPHeaderField: "Authorization")
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        let payload = String(decoding: try JSONSerialization.data(withJSONObject: body, options: [.fragmentsAllowed]), as: UTF8.self)
        request.httpBody = Data((#"{"properties":{"message_id":"deep-headers","type":"PaymentConfirmed","content_type":"application/json","headers":"#
            + headers + #"},"routing_key":""# + routingKey + #"","payload":"# + payload + #","payload_encoding":"string"}"#).utf8)
        let (data, response) = try await URLSession.shared.data(for: request)
        let text = String(decoding: data, as: UTF8.self)
        try #require((response as? HTTPURLResponse)?.statusCode == 200 && text.contains(#""routed":true"#), "management publish: \(text.prefix(300))")
    }

    /// What two sorted lists of reasons differ in, for a readable failure.
    static func difference(_ actual: [String], _ expected: [String]) -> String {
        var counts: [String: Int] = [:]
        for reason in actual { counts[reason, default: 0] += 1 }
        for reason in expected { counts[reason, default: 0] -= 1 }
        return counts.filter { $0.value != 0 }.map { "\($0.key): \($0.value > 0 ? "+" : "")\($0.value)" }.sorted().joined(separator: ", ")
    }
}
