import AMQP
import Foundation

/// The operator's view of the dead-letter queue: read it without losing anything, send messages back to
/// work, or empty it.
///
/// Reading takes messages with `basic.get`, holds them unacknowledged (so the same message is not taken
/// twice) and gives every one back with `nack(requeue: true)` at the end, or when the connection closes.
/// Requeueing acknowledges a dead letter only after the broker confirmed its copy on the target queue.
public struct DeadLetterQueue: Sendable {
    /// The broker connection.
    public let connection: AMQPConnection
    /// The dead-letter queue (`fleet.dead-letters`).
    public let queue: String

    /// The dead-letter queue `queue` on `connection`.
    public init(connection: AMQPConnection, queue: String) {
        self.connection = connection
        self.queue = queue
    }

    /// How many messages the queue holds now.
    /// - Throws: ``OperationsError/Code/notFound`` when the queue does not exist.
    public func count() async throws -> Int {
        Int(try await Self.state(of: queue, on: connection).messageCount)
    }

    /// Up to `limit` dead letters that satisfy `filter`, oldest first; every one stays in the queue.
    public func list(limit: Int = 1000, filter: DeadLetterFilter = DeadLetterFilter()) async throws -> [DeadLetter] {
        guard limit > 0 else { throw OperationsError(.invalidArgument, "--limit must be at least 1") }
        // Without a condition the first `limit` messages are the answer; with one, every message is looked at.
        let everything = filter == DeadLetterFilter()
        let taken = try await take(limit: everything ? limit : Int.max)
        await giveBack(taken)
        let letters = taken.map { DeadLetter(properties: $0.properties, body: $0.body) }
        return everything ? letters : Array(letters.filter(filter.matches).prefix(limit))
    }

    /// The dead letter with message id `messageID`; it stays in the queue.
    /// - Throws: ``OperationsError/Code/notFound`` when no dead letter has that id.
    public func show(messageID: String) async throws -> DeadLetter {
        let taken = try await take(limit: Int.max)
        await giveBack(taken)
        guard let match = taken.first(where: { $0.properties.messageID == messageID }) else {
            throw OperationsError(.notFound, "no dead letter with message id \"\(messageID)\" in \(queue)")
        }
        return DeadLetter(properties: match.properties, body: match.body)
    }

    /// Sends the dead letters `request` selects back to their source queue (or `request.target`) through the
    /// default exchange, without their failure headers, and removes each from the dead-letter queue once the
    /// broker confirmed its copy. Dead letters not selected, and those whose copy was refused or could not be
    /// routed, stay in the queue.
    ///
    /// Only the messages in the queue when it starts are looked at, so a message that fails again while it
    /// runs is not taken twice.
    /// - Throws: ``OperationsError/Code/notFound`` for a missing dead-letter or target queue (before anything moved).
    public func requeue(_ request: DeadLetterRequeueRequest,
                        progress: @Sendable (DeadLetterRequeueReport) -> Void = { _ in }) async throws -> DeadLetterRequeueReport {
        if let limit = request.limit, limit < 1 { throw OperationsError(.invalidArgument, "--limit must be at least 1") }
        if let target = request.target { _ = try await Self.state(of: target, on: connection) }
        let total = try await count()
        var report = DeadLetterRequeueReport(examined: 0, total: total, dryRun: request.dryRun)
        let publisher = request.dryRun ? nil : try await connection.makePublisher(confirms: true)
        var held: [AMQPDelivery] = []
        var batch: [PendingRequeue] = []

        while report.examined < total {
            let next: AMQPDelivery?
            do {
                next = try await connection.get(queue: queue)
            } catch {
                await giveBack(held + batch.map(\.delivery))
                await publisher?.close()
                throw error
            }
            guard let delivery = next else { break }
            report.examined += 1
            let letter = DeadLetter(properties: delivery.properties, body: delivery.body)
            var selected = request.filter.matches(letter)
            if let limit = request.limit, report.selected >= limit { selected = false }
            guard selected else {
                held.append(delivery)
                continue
            }
            guard let target = request.target ?? letter.sourceQueue, !target.isEmpty else {
                held.append(delivery)
                report.withoutSource += 1
                continue
            }
            report.selected += 1
            if request.dryRun {
                held.append(delivery)
                report.requeued[target, default: 0] += 1
                continue
            }
            batch.append(PendingRequeue(delivery: delivery, letter: letter, target: target))
            if batch.count >= 100, let publisher {
                await flush(&batch, publisher: publisher, held: &held, report: &report)
                progress(report)
            }
        }
        if let publisher {
            await flush(&batch, publisher: publisher, held: &held, report: &report)
            await publisher.close()
        }
        await giveBack(held)
        progress(report)
        return report
    }

    /// A dead letter whose copy is about to be published.
    private struct PendingRequeue {
        var delivery: AMQPDelivery
        var letter: DeadLetter
        var target: String
    }

    /// Publishes the copies of `batch`, acknowledges the dead letters confirmed, keeps the others in `held`.
    private func flush(_ batch: inout [PendingRequeue], publisher: AMQPPublisher, held: inout [AMQPDelivery],
                       report: inout DeadLetterRequeueReport) async {
        guard !batch.isEmpty else { return }
        let messages = batch.map { entry in
            AMQPMessage(body: entry.delivery.body, exchange: "", routingKey: entry.target,
                        properties: DeadLetter.requeueProperties(entry.delivery.properties), mandatory: true)
        }
        let results = await publisher.publish(contentsOf: messages)
        for (entry, result) in zip(batch, results) {
            switch result {
            case .success:
                do {
                    try entry.delivery.ack()
                    report.requeued[entry.target, default: 0] += 1
                } catch {
                    // The copy is on the target queue and the dead letter comes back: say so rather than hide it.
                    report.failures.append(.init(messageID: entry.letter.messageID, target: entry.target,
                                                 error: "requeued, but removing the dead letter failed (it stays): \(error)"))
                }
            case .failure(let error):
                held.append(entry.delivery)
                let text = error.code == .messageReturned ? "queue \(entry.target) does not exist (message returned)" : "\(error)"
                report.failures.append(.init(messageID: entry.letter.messageID, target: entry.target, error: text))
            }
        }
        batch.removeAll(keepingCapacity: true)
    }

    /// Removes every message from the queue; returns how many there were.
    public func purge() async throws -> Int {
        _ = try await count()
        return Int(try await connection.purgeQueue(queue))
    }

    /// Takes up to `limit` messages, unacknowledged, so none is taken twice, until the queue has none ready.
    private func take(limit: Int) async throws -> [AMQPDelivery] {
        _ = try await count()
        var taken: [AMQPDelivery] = []
        do {
            while taken.count < limit {
                guard let delivery = try await connection.get(queue: queue) else { break }
                taken.append(delivery)
            }
        } catch {
            await giveBack(taken)
            throw error
        }
        return taken
    }

    /// Puts messages back in the queue, and waits (a few seconds at most) until the broker shows them ready
    /// again: a `nack` is one-way, and the next command on this connection must see them.
    private func giveBack(_ deliveries: [AMQPDelivery]) async {
        guard !deliveries.isEmpty else { return }
        let before = (try? await count()) ?? 0
        for delivery in deliveries { try? delivery.nack(requeue: true) }
        let deadline = ContinuousClock.now.advanced(by: .seconds(5))
        while ContinuousClock.now < deadline {
            if let now = try? await count(), now >= before + deliveries.count { return }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The state of `queue`, or ``OperationsError/Code/notFound``.
    static func state(of queue: String, on connection: AMQPConnection) async throws -> QueueState {
        let result: Result<QueueState, AMQPError>
        do {
            result = .success(try await connection.declare(QueueDeclaration(name: queue), passive: true))
        } catch {
            result = .failure(error)
        }
        switch result {
        case .success(let state):
            return state
        case .failure(let error) where error.code == .notFound:
            throw OperationsError(.notFound, "queue \"\(queue)\" does not exist on \(connection.configuration)")
        case .failure(let error):
            throw error
        }
    }
}

/// What `fleet dlq requeue` takes and where it sends it.
public struct DeadLetterRequeueRequest: Sendable, Hashable {
    /// Which dead letters.
    public var filter: DeadLetterFilter
    /// The queue to send them to instead of their source queue.
    public var target: String?
    /// Only report what would be requeued.
    public var dryRun: Bool
    /// At most this many.
    public var limit: Int?

    /// A request; by default every dead letter to its source queue.
    public init(filter: DeadLetterFilter = DeadLetterFilter(), target: String? = nil, dryRun: Bool = false, limit: Int? = nil) {
        self.filter = filter
        self.target = target
        self.dryRun = dryRun
        self.limit = limit
    }
}

/// What a requeue did (or, in a dry run, would do).
public struct DeadLetterRequeueReport: Sendable, Hashable, Codable {
    /// A dead letter that stayed in the queue because its copy could not be delivered.
    public struct Failure: Sendable, Hashable, Codable {
        /// Its message id.
        public var messageID: String
        /// Where it was to go.
        public var target: String
        /// Why it stayed.
        public var error: String
    }

    /// Dead letters looked at.
    public var examined: Int
    /// Dead letters in the queue when the run started.
    public var total: Int
    /// Whether nothing was moved.
    public var dryRun: Bool
    /// Dead letters the filter and limit selected.
    public var selected = 0
    /// Requeued (or, in a dry run, to be requeued) per target queue.
    public var requeued: [String: Int] = [:]
    /// Selected dead letters without a source queue (and no `--to`): left in place.
    public var withoutSource = 0
    /// Selected dead letters whose copy failed: left in place.
    public var failures: [Failure] = []

    /// The number requeued in all.
    public var requeuedCount: Int { requeued.values.reduce(0, +) }
}
