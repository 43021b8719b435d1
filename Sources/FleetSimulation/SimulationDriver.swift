import AMQP
import EventCore
import Fleet
import Foundation
import Logging
import OrderFulfillment

/// Runs the simulated external services against a live fleet: sends what the simulator says, feeds it the
/// process events the fleet publishes, and measures how long each process took.
public actor SimulationDriver {
    /// What a simulation run saw.
    public struct Report: Sendable {
        /// Processes expected to end each way.
        public var expected: [ExpectedOutcome: Int]
        /// Processes seen ending each way.
        public var observed: [ExpectedOutcome: Int]
        /// Processes that did not end as expected, by business id.
        public var mismatches: [String: (expected: ExpectedOutcome, observed: ExpectedOutcome?)]
        /// How long the run took.
        public var elapsed: Duration
        /// Seconds from each process's first message to its end, sorted.
        public var latencies: [Double]
        /// Seconds from a service's message being published to the arrival of the first process event it caused
        /// (its causation id), for every message whose process events name it; sorted.
        public var eventLatencies: [Double]
        /// Seconds from the start of the run to the arrival of each distinct process event, in arrival order.
        public var eventArrivals: [Double]
        /// Process events received, duplicates included.
        public var processEventsReceived: Int
        /// Distinct process events (by message id) received, by the kind of stream they are stored in.
        public var distinctProcessEvents: [String: Int]
        /// Messages the services sent.
        public var messagesSent: Int
        /// Whether every process ended before the timeout.
        public var finished: Bool
        /// Unprocessable messages sent on purpose.
        public var poisonMessages: Int
        /// The distinct message ids (event ids) of the events received on the process events exchange, by the
        /// kind of stream they are stored in.
        public var processEventIDs: [String: Set<String>]
        /// Replies the services could not publish even after retrying (each leaves a process waiting).
        public var publishFailures: [String]
        /// Process events delivered again after a loss of the simulator's connection (not yet acknowledged
        /// when it was lost).
        public var processEventsRedelivered: Int

        /// How many processes the run started.
        public var processes: Int { expected.values.reduce(0, +) }
    }

    private var simulator: ServiceSimulator
    private let topology: Topology
    private let publisher: AMQPPublisher
    private let logger: Logger
    private var started: [String: ContinuousClock.Instant] = [:]
    private var latencies: [Double] = []
    private var eventLatencies: [Double] = []
    private var eventArrivals: [Double] = []
    private let runStarted = ContinuousClock.now
    /// When each message the services sent was published, until its first process event arrives.
    private var publishedAt: [String: ContinuousClock.Instant] = [:]
    private var seenMessageIDs = Set<String>()
    private var idsByKind: [String: Set<String>] = [:]
    private var distinctByKind: [String: Int] = [:]
    private var received = 0
    private var redelivered = 0
    private var sent = 0
    private var failures: [String] = []

    init(settings: SimulationSettings, topology: Topology, publisher: AMQPPublisher, logger: Logger) {
        simulator = ServiceSimulator(settings: settings)
        self.topology = topology
        self.publisher = publisher
        self.logger = logger
    }

    /// Runs the whole simulation; `progress` is called about twice a second with (ended, total).
    public static func run(settings: SimulationSettings, topology: Topology, amqpURL: String, timeout: Duration, logger: Logger,
                    progress: @escaping @Sendable (Int, Int) -> Void) async throws -> Report {
        var configuration = try AMQPConfiguration(url: amqpURL)
        configuration.connectionName = "simulator publish"
        let publishing = try await AMQPConnection.connect(configuration, logger: logger)
        configuration.connectionName = "simulator consume"
        let consuming = try await AMQPConnection.connect(configuration, logger: logger)
        defer {
            Task {
                await publishing.close()
                await consuming.close()
            }
        }
        let publisher = try await publishing.makePublisher(window: 512)
        // A durable queue of its own with a name, acknowledged after each event is observed: process events
        // published while the broker restarts or the connection recovers wait in it, and the connection's
        // recovery declares it and its binding again (a server-named exclusive queue would vanish with the
        // broker, and with it every event published until the simulator noticed). If the simulator dies, the
        // queue expires once unused for ten minutes.
        let queueName = "simulator.process-events.\(UUID().uuidString.prefix(8).lowercased())"
        let queue = try await consuming.declare(QueueDeclaration(name: queueName, durable: true, arguments: ["x-expires": .int32(600_000)]))
        try await consuming.declare(BindingDeclaration(source: topology.fleet.processEventsExchange, destination: queue.name, routingKey: "#"))
        let consumer = try await consuming.consume(queue: queue.name, prefetch: 1000)
        let driver = SimulationDriver(settings: settings, topology: topology, publisher: publisher, logger: logger)

        let clock = ContinuousClock()
        let start = clock.now
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await delivery in consumer {
                    await driver.observe(delivery)
                }
            }
            // Providers stock their resources before any trip is requested.
            try await driver.sendCapacity()
            let stocked = await driver.waitForCapacity(until: clock.now + .seconds(60))
            if !stocked { logger.warning("simulator: capacity announcements not all seen; trips may be compensated") }
            let opening = await driver.prepareOpening()
            group.addTask {
                do {
                    try await driver.sendOpening(opening)
                } catch {
                    await driver.record(failure: "opening messages: \(error)")
                }
            }
            var finished = false
            while clock.now < start + timeout {
                let (ended, total, done) = await driver.status()
                progress(ended, total)
                if done {
                    finished = true
                    break
                }
                try await Task.sleep(for: .milliseconds(500))
            }
            group.cancelAll()
            try? await consumer.cancel()
            _ = try? await consuming.deleteQueue(queue.name)
            return await driver.report(elapsed: start.duration(to: clock.now), finished: finished)
        }
    }

    private func status() -> (Int, Int, Bool) {
        (simulator.observed.count, simulator.expected.count, simulator.isFinished)
    }

    private func waitForCapacity(until deadline: ContinuousClock.Instant) async -> Bool {
        while ContinuousClock.now < deadline {
            if simulator.capacityPending.isEmpty { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return simulator.capacityPending.isEmpty
    }

    private func sendCapacity() async throws {
        try await send(simulator.capacityAnnouncements())
    }

    /// The opening messages, with every process's expected end recorded.
    private func prepareOpening() -> [SimulatedMessage] {
        simulator.openingMessages()
    }

    private func sendOpening(_ messages: [SimulatedMessage]) async throws {
        let now = ContinuousClock.now
        for message in messages {
            if let id = message.correlationID, simulator.expected[id] != nil, started[id] == nil { started[id] = now }
        }
        let rate = simulator.settings.openingsPerSecond
        guard rate > 0 else {
            try await send(messages)
            return
        }
        // Ten batches a second at the requested rate.
        let batch = max(1, rate / 10)
        var index = 0
        while index < messages.count {
            let slice = Array(messages[index..<min(index + batch, messages.count)])
            let now = ContinuousClock.now
            for message in slice {
                if let id = message.correlationID, simulator.expected[id] != nil { started[id] = now }
            }
            try await send(slice)
            index += batch
            try await Task.sleep(until: now + .milliseconds(1000 * batch / rate))
        }
    }

    private func observe(_ delivery: AMQPDelivery) async {
        received += 1
        if delivery.redelivered { redelivered += 1 }
        // Acknowledged once recorded below (the actor runs this to the end before the next delivery); a
        // delivery of a connection since recovered is back in the queue and comes again, which is harmless.
        try? delivery.ack()
        let properties = delivery.properties
        guard let type = properties.type, let messageID = properties.messageID,
              let stream = properties.headers?[Envelope.Header.streamID]?.stringValue else { return }
        guard seenMessageIDs.insert(messageID).inserted else { return }
        distinctByKind[Self.kind(of: stream), default: 0] += 1
        idsByKind[Self.kind(of: stream), default: []].insert(messageID)
        let sinceStart = runStarted.duration(to: .now)
        eventArrivals.append(sinceStart.seconds)
        if let cause = properties.headers?[Envelope.Header.causationID]?.stringValue, let published = publishedAt.removeValue(forKey: cause) {
            let elapsed = published.duration(to: .now)
            eventLatencies.append(elapsed.seconds)
        }
        let before = simulator.observed.count
        let replies = simulator.observe(eventType: type, streamID: stream, payload: delivery.body)
        if simulator.observed.count > before, let id = businessID(stream: stream), let start = started[id] {
            let elapsed = start.duration(to: .now)
            latencies.append(elapsed.seconds)
        }
        guard !replies.isEmpty else { return }
        let delayed = replies
        Task { [weak self] in
            for message in delayed.sorted(by: { $0.delayMilliseconds < $1.delayMilliseconds }) {
                if message.delayMilliseconds > 0 { try? await Task.sleep(for: .milliseconds(message.delayMilliseconds)) }
                do {
                    try await self?.send([message])
                } catch {
                    await self?.record(failure: "\(error)")
                }
            }
        }
    }

    /// The kind of stream: its id without the business id (`order-fulfillment`, `travel-booking`, `hotel`, ...).
    public static func kind(of stream: String) -> String {
        for prefix in ["order-fulfillment", "travel-booking", "hotel", "flight", "car"] where stream.hasPrefix(prefix + "-") {
            return prefix
        }
        return "other"
    }

    private func businessID(stream: String) -> String? {
        for prefix in ["order-fulfillment-", "travel-booking-"] where stream.hasPrefix(prefix) {
            return String(stream.dropFirst(prefix.count))
        }
        return nil
    }

    private func record(failure: String) {
        failures.append(failure)
    }

    /// Publishes messages with confirms, retrying those whose outcome is unknown.
    private func send(_ messages: [SimulatedMessage]) async throws {
        let amqp = messages.map { message -> AMQPMessage in
            var properties = AMQPProperties.persistent
            properties.contentType = "application/json"
            properties.type = message.eventType
            properties.messageID = message.messageID
            properties.correlationID = message.correlationID
            properties.timestamp = Date()
            let exchange: String
            switch message.bus {
            case .domain: exchange = "domain.events"
            case .legacy: exchange = "legacy.payments"
            }
            return AMQPMessage(body: message.body, exchange: exchange, routingKey: message.routingKey, properties: properties)
        }
        var pending = amqp
        // While the broker restarts or the connection recovers, publishing fails: retry for up to two minutes.
        let deadline = ContinuousClock.now + .seconds(120)
        var attempt = 0
        while !pending.isEmpty {
            attempt += 1
            let publishing = ContinuousClock.now
            for message in pending {
                if let id = message.properties.messageID, publishedAt[id] == nil { publishedAt[id] = publishing }
            }
            let results = await publisher.publish(contentsOf: pending)
            pending = zip(pending, results).compactMap { message, result in
                if case .failure = result { return message }
                return nil
            }
            sent += amqp.count - pending.count
            if !pending.isEmpty {
                guard ContinuousClock.now < deadline else { break }
                if attempt % 10 == 0 {
                    logger.warning("simulator: publishing failed, retrying", metadata: ["attempt": "\(attempt)", "messages": "\(pending.count)"])
                }
                try await Task.sleep(for: .milliseconds(min(200 * attempt, 2000)))
            }
        }
        if !pending.isEmpty { throw AMQPError(.connectionLost, operation: "simulator publish", detail: "\(pending.count) messages unconfirmed after \(attempt) attempts") }
    }

    private func report(elapsed: Duration, finished: Bool) -> Report {
        var expected: [ExpectedOutcome: Int] = [:]
        for outcome in simulator.expected.values { expected[outcome, default: 0] += 1 }
        return Report(expected: expected, observed: simulator.observedCounts, mismatches: simulator.mismatches, elapsed: elapsed,
                      latencies: latencies.sorted(), eventLatencies: eventLatencies.sorted(), eventArrivals: eventArrivals,
                      processEventsReceived: received, distinctProcessEvents: distinctByKind,
                      messagesSent: sent, finished: finished, poisonMessages: simulator.settings.poisonMessages,
                      processEventIDs: idsByKind, publishFailures: failures, processEventsRedelivered: redelivered)
    }
}

extension SimulationDriver.Report {
    /// The value at `fraction` of the sorted latencies, in milliseconds.
    public func percentile(_ fraction: Double) -> Double {
        guard !latencies.isEmpty else { return 0 }
        let index = min(latencies.count - 1, Int((Double(latencies.count) * fraction).rounded(.up)) - 1)
        return latencies[max(0, index)] * 1000
    }

    /// A human-readable summary.
    public var summary: String {
        let seconds = elapsed.seconds
        var lines: [String] = []
        lines.append("processes: \(processes) (\(observed.values.reduce(0, +)) ended) in \(String(format: "%.1f", seconds)) s: \(String(format: "%.1f", Double(processes) / max(seconds, 0.001))) processes/s")
        for outcome in ExpectedOutcome.allCases {
            lines.append("  \(outcome.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0)) expected \(expected[outcome] ?? 0), observed \(observed[outcome] ?? 0)")
        }
        lines.append(String(format: "latency from first message to end: p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms",
                            percentile(0.5), percentile(0.9), percentile(0.99), (latencies.last ?? 0) * 1000))
        lines.append("messages sent by the services: \(messagesSent); process events received: \(processEventsReceived) (\(distinctProcessEvents.values.reduce(0, +)) distinct, \(processEventsRedelivered) redelivered)")
        if !publishFailures.isEmpty {
            lines.append("\(publishFailures.count) replies could not be published, e.g. \(publishFailures.prefix(3).joined(separator: "; "))")
        }
        if mismatches.isEmpty {
            lines.append("every process ended as expected")
        } else {
            lines.append("\(mismatches.count) processes did not end as expected, e.g. " + mismatches.prefix(5).map { "\($0.key): expected \($0.value.expected.rawValue), observed \($0.value.observed?.rawValue ?? "nothing")" }.joined(separator: "; "))
        }
        return lines.joined(separator: "\n")
    }
}
