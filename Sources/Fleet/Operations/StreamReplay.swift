import AMQP
import Foundation
import Synchronization

/// Re-reads a RabbitMQ stream queue (`x-queue-type: stream`) into a processing queue: every message is
/// published to the default exchange with the processing queue as routing key, its body, properties and
/// message id unchanged, and confirmed before the stream delivery is acknowledged.
///
/// A stream has no end to wait for: the run stops after `limit` messages, or once no message has come for
/// `idleTimeout` (it has caught up with the stream's tail), or when `shouldStop` says so.
public struct StreamReplay: Sendable {
    /// Where in the stream to begin.
    public enum Offset: Sendable, Hashable, CustomStringConvertible {
        /// The oldest message the stream retains.
        case first
        /// The last chunk of the stream.
        case last
        /// The message at this offset.
        case offset(Int64)
        /// The first message stored at or after this time.
        case since(Date)

        /// Parses `first`, `last` or a non-negative number.
        public init(parsing text: String) throws(OperationsError) {
            switch text {
            case "first": self = .first
            case "last": self = .last
            default:
                guard let number = Int64(text), number >= 0 else {
                    throw OperationsError(.invalidArgument, "--offset must be first, last or a non-negative number, not \"\(text)\"")
                }
                self = .offset(number)
            }
        }

        /// The `x-stream-offset` consumer argument.
        public var argument: AMQPFieldValue {
            switch self {
            case .first: .string("first")
            case .last: .string("last")
            case .offset(let number): .int64(number)
            case .since(let date): .timestamp(date)
            }
        }

        /// `first`, `last`, `offset 12`, `since 2026-...`.
        public var description: String {
            switch self {
            case .first: "first"
            case .last: "last"
            case .offset(let number): "offset \(number)"
            case .since(let date): "since \(date.formatted(.iso8601))"
            }
        }
    }

    /// The stream queue.
    public var stream: String
    /// The processing queue to fill.
    public var target: String
    /// Where to begin.
    public var offset: Offset
    /// At most this many messages.
    public var limit: Int?
    /// Only count what would be published.
    public var dryRun: Bool
    /// How long without a message means the tail was reached.
    public var idleTimeout: Duration

    /// A stream replay.
    public init(stream: String, target: String, offset: Offset, limit: Int? = nil, dryRun: Bool = false, idleTimeout: Duration = .seconds(3)) {
        self.stream = stream
        self.target = target
        self.offset = offset
        self.limit = limit
        self.dryRun = dryRun
        self.idleTimeout = idleTimeout
    }

    /// Checks the limit and that both queues exist.
    public func validate(connection: AMQPConnection) async throws {
        if let limit, limit < 1 { throw OperationsError(.invalidArgument, "--limit must be at least 1") }
        _ = try await DeadLetterQueue.state(of: stream, on: connection)
        _ = try await DeadLetterQueue.state(of: target, on: connection)
    }

    /// Runs the replay on `connection`.
    public func run(connection: AMQPConnection, shouldStop: @escaping @Sendable () -> Bool = { false },
                    progress: @Sendable (ReplayProgress) -> Void = { _ in }) async throws -> ReplayReport {
        try await validate(connection: connection)
        let publisher = dryRun ? nil : try await connection.makePublisher(confirms: true)
        let consumer = try await connection.consume(queue: stream, prefetch: 500, arguments: ["x-stream-offset": offset.argument])
        let clock = ContinuousClock(), start = clock.now
        let watch = ReplayWatch(now: clock.now)
        let idleTimeout = self.idleTimeout
        // Ends the delivery sequence once the stream stays quiet (its tail was reached) or a stop is asked for.
        let watchdog = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                let idle = clock.now - watch.lastActivity.withLock { $0 }
                if idle > idleTimeout || shouldStop() {
                    watch.finished.withLock { $0 = true }
                    try? await consumer.cancel()
                    return
                }
            }
        }
        defer { watchdog.cancel() }
        func elapsed() -> Double { (clock.now - start).seconds }
        var published = 0, lastOffset: Int?
        var stoppedEarly = false
        do {
            for try await delivery in consumer {
                watch.lastActivity.withLock { $0 = clock.now }
                if watch.finished.withLock({ $0 }) { break }
                if shouldStop() || Task.isCancelled {
                    stoppedEarly = true
                    break
                }
                var properties = delivery.properties
                let position = properties.headers?["x-stream-offset"]?.intValue
                properties.headers?["x-stream-offset"] = nil
                if properties.headers?.isEmpty == true { properties.headers = nil }
                if let publisher {
                    do {
                        try await publisher.publish(delivery.body, exchange: "", routingKey: target, properties: properties, mandatory: true)
                    } catch {
                        throw OperationsError(.publishFailed, "publishing the message at stream offset \(position.map(String.init) ?? "?") to \(target) failed: \(error); \(published) messages were confirmed")
                    }
                }
                try? delivery.ack()
                published += 1
                lastOffset = position.map { Int($0) }
                if published % 500 == 0 {
                    progress(ReplayProgress(published: published, lastPosition: lastOffset ?? 0, elapsedSeconds: elapsed()))
                }
                if let limit, published >= limit {
                    stoppedEarly = true
                    break
                }
            }
        } catch let error as OperationsError {
            try? await consumer.cancel()
            await publisher?.close()
            throw error
        } catch {
            // The watchdog's cancel can end the sequence with an error; anything else is a real failure.
            if !watch.finished.withLock({ $0 }) {
                await publisher?.close()
                throw error
            }
        }
        if shouldStop() { stoppedEarly = true }
        if !watch.finished.withLock({ $0 }) { try? await consumer.cancel() }
        await publisher?.close()
        progress(ReplayProgress(published: published, lastPosition: lastOffset ?? 0, elapsedSeconds: elapsed()))
        return ReplayReport(published: published, resumedAfter: nil, lastPosition: lastOffset, stoppedEarly: stoppedEarly,
                            dryRun: dryRun, elapsedSeconds: elapsed())
    }
}

/// When a stream replay last saw a message, and whether its watchdog ended the run.
private final class ReplayWatch: Sendable {
    let lastActivity: Mutex<ContinuousClock.Instant>
    let finished = Mutex(false)

    init(now: ContinuousClock.Instant) {
        lastActivity = Mutex(now)
    }
}
