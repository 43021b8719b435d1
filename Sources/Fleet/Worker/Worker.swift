import AMQP
import EventCore
import Foundation
import Logging
import Synchronization

/// A worker of the fleet: consumes the routed queues, hands each message to its handler, publishes what the
/// handler produced, and acknowledges the message only after every publication is confirmed.
///
/// - Messages that cannot be read or can never succeed are dead-lettered at once with reason headers.
/// - Transient failures are retried through the delay queues with the retry policy, then dead-lettered.
/// - A message that arrives before its due time (a timeout) is delayed again, so nothing is handled early.
/// - ``run()`` returns after ``shutdown()``: deliveries stop, messages in hand finish within the grace period,
///   connections close. Anything not acknowledged by then is redelivered to another worker, where the
///   idempotency key absorbs it.
public final class Worker: Sendable {
    /// The worker's settings.
    public let configuration: WorkerConfiguration
    /// The broker topology (routes, dead-letter exchange, delay levels).
    public let topology: Topology
    private let handlers: [String: any MessageHandler]
    private let retryPolicy: RetryPolicy
    private let delayTiming: DelayTiming
    private let hopCost = HopCost()
    private let logger: Logger
    private let metrics: WorkerMetrics
    private let now: @Sendable () -> Date
    private let whenIdle: @Sendable () -> Void
    private let state = Mutex(RunState())
    /// The time limits of the messages in hand (``WorkerConfiguration/handlerTimeoutSeconds``).
    private let deadlines = Deadlines()

    private struct RunState: ~Copyable {
        var consumers: [AMQPConsumer] = []
        var connections: [AMQPConnection] = []
        var stopping = false
        var inFlight = 0
        /// When the last message was finished.
        var lastFinished = ContinuousClock.now
        /// Whether `whenIdle` ran since then.
        var released = true
        var ready = false
    }

    /// A worker.
    ///
    /// - Parameters:
    ///   - handlers: the handler of each name routes use in `topology.json`.
    ///   - retryPolicy: how transient failures are retried.
    ///   - delayTiming: how timeouts and retries wait on the delay levels and in the worker.
    ///   - now: the wall clock (injectable for tests).
    ///   - whenIdle: runs once each time no message has been in hand for
    ///     ``WorkerConfiguration/idleReleaseSeconds``: the place to give back memory kept for speed, such as a
    ///     stream cache, which another worker's writes make stale meanwhile anyway.
    /// - Throws: ``TopologyError`` when a route names a handler that is not given.
    public init(configuration: WorkerConfiguration, topology: Topology, handlers: [String: any MessageHandler],
                retryPolicy: RetryPolicy = RetryPolicy(maxRetries: 8, backoff: .exponential(initial: .seconds(1), multiplier: 2, maximum: .seconds(300)), jitter: 0.2),
                delayTiming: DelayTiming = DelayTiming(),
                logger: Logger, metrics: WorkerMetrics, now: @escaping @Sendable () -> Date = { Date() },
                whenIdle: @escaping @Sendable () -> Void = {}) throws(TopologyError) {
        for (index, route) in topology.fleet.routes.enumerated() where handlers[route.handler] == nil {
            throw TopologyError(entry: "fleet.routes[\(index)] (\(route.queue))", problem: "no handler named \(route.handler) is registered (known: \(handlers.keys.sorted().joined(separator: ", ")))")
        }
        self.configuration = configuration
        self.topology = topology
        self.handlers = handlers
        self.retryPolicy = retryPolicy
        self.delayTiming = delayTiming
        self.logger = logger
        self.metrics = metrics
        self.now = now
        self.whenIdle = whenIdle
    }

    /// Whether the worker is consuming (for `/health/ready`).
    public var isReady: Bool { state.withLock { $0.ready && !$0.stopping } }

    /// Whether the worker's broker connections are up: false before it connects, and while a lost connection
    /// is being recovered (for `/health/ready`).
    public var isConnectedToBroker: Bool {
        let connections = state.withLock { $0.connections }
        return !connections.isEmpty && connections.allSatisfy(\.isConnected)
    }

    /// Messages being handled now.
    public var inFlight: Int { state.withLock { $0.inFlight } }

    /// Runs until ``shutdown()`` (or cancellation, the hard stop).
    public func run() async throws {
        var amqp = try AMQPConfiguration(url: configuration.amqpURL)
        amqp.connectionName = "\(configuration.workerID) consume"
        let consuming = try await AMQPConnection.connect(amqp, logger: logger)
        amqp.connectionName = "\(configuration.workerID) publish"
        let publishing: AMQPConnection
        do {
            publishing = try await AMQPConnection.connect(amqp, logger: logger)
        } catch {
            await consuming.close()
            throw error
        }
        state.withLock { $0.connections = [consuming, publishing] }
        defer { state.withLock { $0.connections = [] } }
        do {
            try await consume(from: consuming, publishingOn: publishing)
        } catch {
            await consuming.close()
            await publishing.close()
            throw error
        }
        await consuming.close()
        await publishing.close()
    }

    private func consume(from consuming: AMQPConnection, publishingOn publishing: AMQPConnection) async throws {
        try await topology.declare(on: publishing)
        let publisher = try await publishing.makePublisher(window: 512)
        let semaphore = AsyncSemaphore(permits: configuration.concurrency)

        var consumers: [(Route, AMQPConsumer)] = []
        for route in topology.fleet.routes {
            // Timeouts held until they are due must not take the places of the messages behind them.
            let prefetch = configuration.prefetch + (route.queue == topology.fleet.timeoutsQueue ? configuration.holdCapacity : 0)
            let consumer = try await consuming.consume(queue: route.queue, prefetch: UInt16(clamping: prefetch))
            consumers.append((route, consumer))
        }
        let alreadyStopping = state.withLock { state in
            state.consumers = consumers.map(\.1)
            state.ready = true
            return state.stopping
        }
        if alreadyStopping { await stopDeliveries() }
        logger.info("worker: consuming", metadata: ["queues": "\(consumers.map(\.0.queue))", "worker": "\(configuration.workerID)"])

        let idleRelease = configuration.idleReleaseSeconds > 0 ? Task { await releaseWhenIdle(after: .seconds(configuration.idleReleaseSeconds)) } : nil
        defer { idleRelease?.cancel() }
        await withTaskGroup(of: Void.self) { group in
            for (route, consumer) in consumers {
                let decoder = EnvelopeDecoder(route: route, maximumBodyBytes: configuration.maximumBodyBytes)
                // The timeouts queue may hold its whole hold capacity; a queue of retries, a quarter of its prefetch.
                let holdLimit = route.queue == topology.fleet.timeoutsQueue ? configuration.holdCapacity : min(configuration.holdCapacity, configuration.prefetch / 4)
                let held = HoldCount(limit: holdLimit)
                group.addTask {
                    await withDiscardingTaskGroup { inFlight in
                        @Sendable func handle(_ delivery: AMQPDelivery) async {
                            self.state.withLock { $0.inFlight += 1 }
                            defer {
                                let count = self.state.withLock { state in
                                    state.inFlight -= 1
                                    state.lastFinished = .now
                                    state.released = false
                                    return state.inFlight
                                }
                                self.metrics.inFlight(count)
                                semaphore.release()
                            }
                            await self.processWithinTimeLimit(delivery, route: route, decoder: decoder, publisher: publisher)
                        }
                        do {
                            for try await delivery in consumer {
                                if let wait = self.holdTime(of: delivery) {
                                    if self.acknowledgedIfObsolete(delivery, route: route, decoder: decoder) { continue }
                                    if let holding = held.take() {
                                        self.metrics.held(holding, queue: route.queue)
                                        inFlight.addTask {
                                            let slept: Bool
                                            do { try await Task.sleep(for: wait); slept = true } catch { slept = false }
                                            self.metrics.held(held.release(), queue: route.queue)
                                            guard slept else {
                                                // Stopped before it was due: give it back rather than act early.
                                                self.settle(delivery, queue: route.queue) { try $0.nack(requeue: true) }
                                                return
                                            }
                                            await semaphore.acquire()
                                            await handle(delivery)
                                        }
                                        continue
                                    }
                                    // The hold is full: handled now, which sends it back to the levels.
                                }
                                await semaphore.acquire()
                                inFlight.addTask { await handle(delivery) }
                            }
                        } catch {
                            self.logger.error("worker: consumer ended", metadata: ["queue": "\(route.queue)", "error": "\(error)"])
                        }
                    }
                }
            }
        }
        state.withLock { $0.ready = false }
        logger.info("worker: drained", metadata: ["worker": "\(configuration.workerID)"])
    }

    /// Runs `whenIdle` once each time no message has been in hand for `idle`, until cancelled.
    private func releaseWhenIdle(after idle: Duration) async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: min(idle / 4, .seconds(5))) } catch { return }
            let release = state.withLock { state in
                guard !state.released, state.inFlight == 0, ContinuousClock.now - state.lastFinished >= idle else { return false }
                state.released = true
                return true
            }
            if release {
                whenIdle()
                metrics.idleRelease()
                logger.debug("worker: idle; memory kept for speed given back", metadata: ["idle_seconds": "\(idle.components.seconds)"])
            }
        }
    }

    /// Stops taking messages; ``run()`` returns once the messages in hand are finished.
    public func shutdown() async {
        state.withLock { $0.stopping = true }
        await stopDeliveries()
    }

    private func stopDeliveries() async {
        let consumers = state.withLock { $0.consumers }
        for consumer in consumers {
            do {
                try await consumer.stopDeliveries()
            } catch {
                logger.warning("worker: stopping a consumer failed", metadata: ["queue": "\(consumer.queue)", "error": "\(error)"])
            }
        }
    }

    /// The messages one consumer holds until their due time, within a limit.
    final class HoldCount: Sendable {
        private let count = Mutex(0)
        private let limit: Int

        init(limit: Int) { self.limit = limit }

        /// Takes a place; the number held with it, or nil when the hold is full.
        func take() -> Int? {
            count.withLock { count in
                guard count < limit else { return nil }
                count += 1
                return count
            }
        }

        /// Gives a place back; the number still held.
        func release() -> Int {
            count.withLock { count in
                count -= 1
                return count
            }
        }
    }

    // MARK: - One message

    /// How long to hold a delivery that arrived shortly before its due time (`x-fleet-due-at`), read before it
    /// takes a permit; nil when it is due, too early to hold, or carries no due time. A due time that does not
    /// decode is left to the decoder, which dead-letters the message.
    private func holdTime(of delivery: AMQPDelivery) -> Duration? {
        guard let due = delivery.properties.headers?[Envelope.Header.dueAt]?.intValue else { return nil }
        let now = now()
        if delivery.properties.headers?[Envelope.Header.delayedAt] != nil {
            hopCost.observe(routingKey: delivery.routingKey, headers: delivery.properties.headers, levels: topology.fleet.delay, now: now)
            metrics.hopCost(seconds: hopCost.seconds)
        }
        let remaining = Double(due) / 1000 - now.timeIntervalSince1970
        guard case .hold(let seconds) = delayTiming.arrival(remaining: remaining) else { return nil }
        return DelayTiming.holdDuration(seconds)
    }

    /// Acknowledges `delivery`, a message about to be held until its due time, at once if its handler knows it
    /// changes nothing (``MessageHandler/isObsolete(_:)``), so that it takes no place in the hold; true if it did.
    private func acknowledgedIfObsolete(_ delivery: AMQPDelivery, route: Route, decoder: EnvelopeDecoder) -> Bool {
        guard let envelope = try? decoder.decode(body: delivery.body, properties: delivery.properties, routingKey: delivery.routingKey, queue: route.queue, now: now()),
              handlers[route.handler]!.isObsolete(envelope)
        else { return false }
        metrics.consumed(queue: route.queue)
        countObsolete(queue: route.queue)
        settle(delivery, queue: route.queue) { try $0.ack(); metrics.acked(queue: route.queue) }
        return true
    }

    /// Counts an obsolete message; on the timeouts queue, also as a timeout arrived (it left the broker), without
    /// a lateness (it was not fired).
    private func countObsolete(queue: String) {
        metrics.obsolete(queue: queue)
        if queue == topology.fleet.timeoutsQueue { metrics.timeoutArrived(lateness: nil) }
    }

    /// The settlement guard of the message the current task handles.
    @TaskLocal static var settlement: FirstClaim?

    /// Handles a message, giving up on it past `handlerTimeoutSeconds`: a handler or a publication that never
    /// ends (a store or broker call that lost its answer) must not hold a permit and the delivery for ever, nor
    /// keep the worker from draining. The message goes back to the broker and is redelivered; if the abandoned
    /// handling ends after all, its settlement is skipped and its effect, if any, is absorbed by the
    /// idempotency key when the message comes again.
    func processWithinTimeLimit(_ delivery: AMQPDelivery, route: Route, decoder: EnvelopeDecoder, publisher: AMQPPublisher) async {
        let limit = configuration.handlerTimeoutSeconds
        guard limit > 0 else {
            await process(delivery, route: route, decoder: decoder, publisher: publisher)
            return
        }
        let settlement = FirstClaim()
        let finished: Void? = await deadlines.run(within: .seconds(limit)) {
            await Self.$settlement.withValue(settlement) {
                await self.process(delivery, route: route, decoder: decoder, publisher: publisher)
            }
        }
        guard finished == nil else { return }
        logger.error("worker: handling a message took too long; it goes back to the broker", metadata: [
            "queue": "\(route.queue)", "message_id": "\(delivery.properties.messageID ?? "")", "limit_seconds": "\(limit)",
        ])
        if settlement.claim() {
            do {
                try delivery.nack(requeue: true)
            } catch {
                logger.debug("worker: settling skipped", metadata: ["error": "\(error)"])
            }
        }
    }

    func process(_ delivery: AMQPDelivery, route: Route, decoder: EnvelopeDecoder, publisher: AMQPPublisher) async {
        let queue = route.queue
        metrics.consumed(queue: queue)
        if delivery.redelivered { metrics.redelivered(queue: queue) }
        let envelope: Envelope
        do {
            envelope = try decoder.decode(body: delivery.body, properties: delivery.properties, routingKey: delivery.routingKey, queue: queue, now: now())
        } catch {
            await deadLetter(delivery, queue: queue, error: error, publisher: publisher)
            return
        }
        let handler = handlers[route.handler]!
        if handler.isObsolete(envelope) {
            countObsolete(queue: queue)
            settle(delivery, queue: queue) { try $0.ack(); metrics.acked(queue: queue) }
            return
        }
        var logger = self.logger
        logger[metadataKey: "message_id"] = "\(envelope.messageID)"
        logger[metadataKey: "correlation_id"] = "\(envelope.correlationID ?? "")"

        // Never act before the due time: a message that arrived too early to be held (or while the hold was
        // full) goes back to the delay levels, for at least a second so that it cannot loop.
        if let dueAt = envelope.dueAt, dueAt > now() {
            do {
                try await publishDelayed([DelayedMessage(envelope: envelope, destination: queue, dueAt: dueAt)], atLeastOneSecond: true, publisher: publisher)
                metrics.redelayed(queue: queue)
                settle(delivery, queue: queue) { try $0.ack(); metrics.acked(queue: queue) }
            } catch {
                logger.warning("worker: re-delaying failed; the message will come again", metadata: ["error": "\(error)"])
                settle(delivery, queue: queue) { try $0.nack(requeue: true) }
            }
            return
        }

        if queue == topology.fleet.timeoutsQueue {
            metrics.timeoutArrived(lateness: envelope.dueAt.map { now().timeIntervalSince($0) })
        }
        let started = ContinuousClock.now
        do {
            let outcome = try await handler.handle(envelope)
            metrics.conflictsRetried(outcome.conflictsRetried)
            if outcome.effect == .duplicate { metrics.duplicateAbsorbed(queue: queue) }
            try await publishOutcome(outcome, publisher: publisher)
            let elapsed = started.duration(to: .now)
            metrics.handled(queue: queue, seconds: elapsed.seconds)
            settle(delivery, queue: queue) { try $0.ack(); metrics.acked(queue: queue) }
        } catch let error as EnvelopeError {
            await deadLetter(delivery, queue: queue, error: error, publisher: publisher)
        } catch let error as AMQPError {
            // The effect is committed (or not); publishing failed. Redelivery publishes again (duplicate).
            logger.warning("worker: publishing failed; the message will come again", metadata: ["error": "\(error)"])
            settle(delivery, queue: queue) { try $0.nack(requeue: true) }
        } catch {
            await retryLater(delivery, envelope: envelope, queue: queue, error: error, publisher: publisher)
        }
    }

    private func publishOutcome(_ outcome: HandlerOutcome, publisher: AMQPPublisher) async throws(AMQPError) {
        var messages = outcome.publications.map { publication in
            AMQPMessage(body: publication.envelope.body, exchange: publication.exchange ?? topology.fleet.processEventsExchange,
                        routingKey: publication.routingKey, properties: publication.envelope.properties)
        }
        messages += outcome.delayed.map { delayedMessage($0) }
        guard !messages.isEmpty else { return }
        for result in await publisher.publish(contentsOf: messages) { try result.get() }
        metrics.published(messages.count)
        metrics.timeoutsScheduled(outcome.delayed.filter { $0.destination == nil }.count)
        if outcome.effect == .committed, let committedAt = outcome.publications.compactMap(\.envelope.timestamp).max() {
            metrics.outboxLag(seconds: now().timeIntervalSince(committedAt))
        }
    }

    private func publishDelayed(_ delayed: [DelayedMessage], atLeastOneSecond: Bool = false, publisher: AMQPPublisher) async throws(AMQPError) {
        for result in await publisher.publish(contentsOf: delayed.map { delayedMessage($0, atLeastOneSecond: atLeastOneSecond) }) { try result.get() }
    }

    /// The message that travels through the delay levels and reaches its destination shortly before `dueAt`,
    /// where a worker holds it until it is due (``DelayTiming``). With `atLeastOneSecond` (a message that
    /// arrived too early, or found the hold full), it waits at least a second on the levels instead.
    func delayedMessage(_ delayed: DelayedMessage, atLeastOneSecond: Bool = false) -> AMQPMessage {
        var envelope = delayed.envelope
        envelope.dueAt = delayed.dueAt
        let levels = topology.fleet.delay
        let now = now()
        let seconds = delayTiming.routedSeconds(remaining: delayed.dueAt.timeIntervalSince(now), maximum: levels.maximumDelaySeconds,
                                                atLeastOneSecond: atLeastOneSecond, hopCost: hopCost.seconds)
        let address = levels.address(delaySeconds: seconds, destination: delayed.destination ?? topology.fleet.timeoutsQueue)
        var properties = envelope.properties
        if seconds > 0 { HopCost.stamp(&properties.headers, sentAt: now) }
        return AMQPMessage(body: envelope.body, exchange: address.exchange, routingKey: address.routingKey,
                           properties: properties, mandatory: true)
    }

    private func retryLater(_ delivery: AMQPDelivery, envelope: Envelope, queue: String, error: any Error, publisher: AMQPPublisher) async {
        let attempt = envelope.attempt + 1
        guard retryPolicy.allowsRetry(afterAttempt: attempt) else {
            await deadLetter(delivery, queue: queue, error: EnvelopeError(.retriesExhausted, "after \(attempt) attempts: \(error)"), publisher: publisher)
            return
        }
        let delay = retryPolicy.delay(beforeRetry: attempt, unitRandom: Double.random(in: 0..<1))
        var retry = envelope
        retry.attempt = attempt
        let dueAt = now().addingTimeInterval(max(1, delay.seconds))
        logger.warning("worker: transient failure, retrying later", metadata: [
            "message_id": "\(envelope.messageID)", "attempt": "\(attempt)", "error": "\(error)",
        ])
        do {
            try await publishDelayed([DelayedMessage(envelope: retry, destination: queue, dueAt: dueAt)], publisher: publisher)
            metrics.retried(queue: queue)
            settle(delivery, queue: queue) { try $0.ack(); metrics.acked(queue: queue) }
        } catch {
            settle(delivery, queue: queue) { try $0.nack(requeue: true) }
        }
    }

    /// Publishes the message to the dead-letter exchange with the reason, then acknowledges it. The original
    /// body and properties are kept, so `fleet dlq requeue` can send it back unchanged.
    private func deadLetter(_ delivery: AMQPDelivery, queue: String, error: EnvelopeError, publisher: AMQPPublisher) async {
        var properties = delivery.properties
        var headers = properties.headers ?? [:]
        var detail = String(error.detail.prefix(1000))
        let headerBytes = Self.encodedSize(of: headers)
        if headerBytes > Self.maximumKeptHeaderBytes {
            // With the failure headers added, the properties would no longer fit in a frame: the publication
            // would fail and the message come back for ever. The reason matters more than the original headers.
            detail += " (its \(headers.count) headers, \(headerBytes) bytes encoded, were dropped)"
            headers = [:]
        }
        headers[Envelope.Header.error] = .string(error.code.rawValue)
        headers[Envelope.Header.errorDetail] = .string(detail)
        headers[Envelope.Header.worker] = .string(configuration.workerID)
        headers[Envelope.Header.failedAt] = .string(ISO8601DateFormatter().string(from: now()))
        headers[Envelope.Header.sourceQueue] = .string(queue)
        headers[Envelope.Header.sourceRoutingKey] = .string(delivery.routingKey)
        properties.headers = headers
        logger.warning("worker: dead-lettering a message", metadata: [
            "queue": "\(queue)", "reason": "\(error.code)", "detail": "\(error.detail.prefix(200))",
            "message_id": "\(delivery.properties.messageID ?? "")",
        ])
        do {
            try await publisher.publish(delivery.body, exchange: topology.fleet.deadLetterExchange, routingKey: delivery.routingKey,
                                        properties: properties, mandatory: true)
            metrics.deadLettered(queue: queue, reason: error.code.rawValue)
            settle(delivery, queue: queue) { try $0.ack(); metrics.acked(queue: queue) }
        } catch {
            logger.error("worker: dead-lettering failed; the message will come again", metadata: ["error": "\(error)"])
            settle(delivery, queue: queue) { try $0.nack(requeue: true) }
        }
    }

    /// Original headers up to this size travel with a dead letter; larger tables are dropped so that the
    /// properties frame stays well below the broker's default `frame_max` (128 KiB).
    static let maximumKeptHeaderBytes = 64 << 10

    /// The size of a header table in the AMQP 0-9-1 wire encoding (counted without recursion, so that any
    /// nesting is safe).
    static func encodedSize(of table: AMQPTable) -> Int {
        var size = 4
        var pending: [AMQPFieldValue] = []
        for (key, value) in table {
            size += 1 + key.utf8.count
            pending.append(value)
        }
        while let value = pending.popLast() {
            size += 1
            switch value {
            case .bool, .int8, .uint8: size += 1
            case .int16, .uint16: size += 2
            case .int32, .uint32, .float: size += 4
            case .int64, .uint64, .double, .timestamp: size += 8
            case .decimal: size += 5
            case .string(let text): size += 4 + text.utf8.count
            case .bytes(let bytes): size += 4 + bytes.count
            case .array(let values):
                size += 4
                pending.append(contentsOf: values)
            case .table(let nested):
                size += 4
                for (key, value) in nested {
                    size += 1 + key.utf8.count
                    pending.append(value)
                }
            case .void: break
            }
        }
        return size
    }

    private func settle(_ delivery: AMQPDelivery, queue: String, _ action: (AMQPDelivery) throws -> Void) {
        // A message the watchdog gave up on is back in the queue already.
        if let settlement = Self.settlement, !settlement.claim() {
            logger.warning("worker: a message given up on ended after all; not settled again", metadata: ["message_id": "\(delivery.properties.messageID ?? "")"])
            return
        }
        do {
            try action(delivery)
        } catch {
            // A stale delivery comes again after the connection's recovery; the idempotency key absorbs it.
            logger.debug("worker: settling skipped", metadata: ["error": "\(error)"])
        }
    }
}
