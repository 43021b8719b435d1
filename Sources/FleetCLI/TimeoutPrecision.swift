import AMQP
import EventCore
import Fleet
import Foundation
import Histogram
import Synchronization

/// How precisely timeouts reach their handler: `fleet bench --timeouts N`.
///
/// Schedules `count` messages exactly as a worker schedules a timeout (``DelayTiming``: routed through the
/// topology's delay levels to arrive shortly before the due time, carrying it in `x-fleet-due-at`), due at
/// random times spread over `spread` seconds, all pending at once, into a queue of its own bound to the
/// delivery exchange. On arrival each one is treated as a worker treats it: held until due when it arrived
/// within the hold window (up to the worker's hold capacity), sent back to the levels when it arrived earlier
/// or found the hold full, and otherwise handled; its lateness is measured when it would be handled. Handling
/// one before its due time would be early: there must be none.
///
/// With `baseline`, every other timeout instead takes the plain way, the delay rounded up to whole seconds and
/// no hold, and is reported apart: the same broker, the same load, the same run.
enum TimeoutPrecision {
    /// What a run saw for one way of scheduling.
    struct Figures: Codable {
        var scheduled = 0
        var received = 0
        var early = 0
        var held = 0
        var sentBack = 0
        var latenessMilliseconds: [String: Double] = [:]
    }

    /// What a run saw.
    struct Report: Codable {
        var scheduled: Int
        var received: Int
        var early: Int
        var publishSeconds: Double
        var latenessMilliseconds: [String: Double]
        /// Timeouts held until due, and sent back to the levels.
        var held: Int
        var sentBack: Int
        /// What a hop through the levels cost at the end, as learnt from the arrivals (``HopCost``).
        var hopCostMilliseconds: Double
        /// The plain way (rounded up, never held), when measured.
        var baseline: Figures?
    }

    private static let strategyHeader = "x-fleet-bench-strategy"

    /// Per strategy: what arrived, and the lateness histogram.
    private struct Tally {
        var figures = Figures()
        var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)

        mutating func handled(lateness milliseconds: Double) {
            figures.received += 1
            if milliseconds < 0 { figures.early += 1 } else { _ = histogram.record(UInt64(milliseconds * 1000)) }
        }

        func summary() -> Figures {
            var figures = self.figures
            func milliseconds(_ percentile: Double) -> Double { Double(histogram.valueAtPercentile(percentile)) / 1000 }
            figures.latenessMilliseconds = ["p50": milliseconds(50), "p90": milliseconds(90), "p99": milliseconds(99),
                                            "max": Double(histogram.maxRecorded) / 1000]
            return figures
        }
    }

    private final class Shared: Sendable {
        private let state = Mutex(State())
        func withLock<R: Sendable>(_ body: (inout State) -> R) -> R { state.withLock { body(&$0) } }
    }

    private struct State {
        var fleet = Tally()
        var plain = Tally()
        var held = 0
        var done: Int { fleet.figures.received + plain.figures.received }
    }

    static func measure(connection: AMQPConnection, topology: Topology, count: Int, spread: Int, baseline: Bool = false,
                        timing: DelayTiming = DelayTiming(), holdCapacity: Int = WorkerConfiguration().holdCapacity) async throws -> Report {
        let levels = topology.fleet.delay
        let queue = "fleet-bench.timeouts.\(UInt32.random(in: 0...UInt32.max))"
        try await connection.declare(QueueDeclaration(name: queue, durable: true, autoDelete: false))
        let anyDelay = Array(repeating: "*", count: levels.levels).joined(separator: ".")
        try await connection.declare(BindingDeclaration(source: levels.deliveryExchange, destination: queue, routingKey: "\(anyDelay).\(queue)"))
        let consumer = try await connection.consume(queue: queue, prefetch: 2000, noAck: true)
        let state = Shared()
        let hopCost = HopCost()

        @Sendable func message(index: Int, dueMilliseconds: Int64, plain: Bool, atLeastOneSecond: Bool = false) -> AMQPMessage {
            let now = Date()
            let remaining = Double(dueMilliseconds) / 1000 - now.timeIntervalSince1970
            let seconds = plain ? max(0, Int(remaining.rounded(.up)))
                : timing.routedSeconds(remaining: remaining, maximum: levels.maximumDelaySeconds, atLeastOneSecond: atLeastOneSecond,
                                       hopCost: hopCost.seconds)
            let address = plain ? (levels.entryExchange, levels.routingKey(delaySeconds: seconds, destination: queue))
                : levels.address(delaySeconds: seconds, destination: queue)
            var properties = AMQPProperties.persistent
            properties.messageID = "timeout-\(index)"
            properties.type = "ProcessTimeoutDue"
            properties.headers = [Envelope.Header.dueAt: .int64(dueMilliseconds), strategyHeader: .string(plain ? "plain" : "fleet")]
            if !plain && seconds > 0 { HopCost.stamp(&properties.headers, sentAt: now) }
            return AMQPMessage(body: Data(#"{"timeout":"bench"}"#.utf8), exchange: address.0, routingKey: address.1, properties: properties)
        }

        let resending = try await connection.makePublisher(window: 256)
        let receiving = Task {
            await withTaskGroup(of: Void.self) { holds in
                do {
                    for try await delivery in consumer {
                        guard let headers = delivery.properties.headers, let due = headers[Envelope.Header.dueAt]?.intValue else { continue }
                        let plain = headers[strategyHeader]?.stringValue == "plain"
                        let index = Int(delivery.properties.messageID?.dropFirst("timeout-".count) ?? "") ?? 0
                        func handled() -> Bool {
                            let lateness = Date().timeIntervalSince1970 * 1000 - Double(due)
                            return state.withLock { state in
                                if plain { state.plain.handled(lateness: lateness) } else { state.fleet.handled(lateness: lateness) }
                                return state.done == count
                            }
                        }
                        if !plain { hopCost.observe(routingKey: delivery.routingKey, headers: headers, levels: levels, now: Date()) }
                        let remaining = Double(due) / 1000 - Date().timeIntervalSince1970
                        var arrival: DelayTiming.Arrival = plain ? .due : timing.arrival(remaining: remaining)
                        if case .hold = arrival, !state.withLock({ state in
                            guard state.held < holdCapacity else { return false }
                            state.held += 1
                            state.fleet.figures.held += 1
                            return true
                        }) {
                            arrival = .tooEarly
                        }
                        switch arrival {
                        case .due:
                            if handled() { try await consumer.cancel() }
                        case .hold(let seconds):
                            holds.addTask {
                                try? await Task.sleep(for: DelayTiming.holdDuration(seconds))
                                let lateness = Date().timeIntervalSince1970 * 1000 - Double(due)
                                let all = state.withLock { state in
                                    state.held -= 1
                                    state.fleet.handled(lateness: lateness)
                                    return state.done == count
                                }
                                if all { try? await consumer.cancel() }
                            }
                        case .tooEarly:
                            state.withLock { $0.fleet.figures.sentBack += 1 }
                            _ = await resending.publish(contentsOf: [message(index: index, dueMilliseconds: due, plain: false, atLeastOneSecond: true)])
                        }
                    }
                } catch {}
            }
        }

        let publisher = try await connection.makePublisher(window: 1024)
        let started = ContinuousClock.now
        var batch: [AMQPMessage] = []
        for index in 0..<count {
            let dueAt = Date().addingTimeInterval(1 + Double.random(in: 0..<Double(max(1, spread - 1))))
            let plain = baseline && index % 2 == 1
            state.withLock { state in
                if plain { state.plain.figures.scheduled += 1 } else { state.fleet.figures.scheduled += 1 }
            }
            batch.append(message(index: index, dueMilliseconds: Int64((dueAt.timeIntervalSince1970 * 1000).rounded(.up)), plain: plain))
            if batch.count == 1000 || index == count - 1 {
                for result in await publisher.publish(contentsOf: batch) { try result.get() }
                batch.removeAll(keepingCapacity: true)
            }
        }
        let published = started.duration(to: .now)
        await publisher.close()

        // Every message is due within `spread` seconds of its publication; allow two minutes more.
        let deadline = Task {
            try await Task.sleep(for: .seconds(spread + 120))
            try await consumer.cancel()
        }
        await receiving.value
        deadline.cancel()
        try? await consumer.cancel()
        await resending.close()
        _ = try? await connection.deleteQueue(queue)
        let (fleet, plain) = state.withLock { ($0.fleet.summary(), $0.plain.summary()) }
        return Report(
            scheduled: fleet.scheduled, received: fleet.received, early: fleet.early,
            publishSeconds: published.seconds, latenessMilliseconds: fleet.latenessMilliseconds,
            held: fleet.held, sentBack: fleet.sentBack, hopCostMilliseconds: hopCost.seconds * 1000, baseline: baseline ? plain : nil
        )
    }
}
