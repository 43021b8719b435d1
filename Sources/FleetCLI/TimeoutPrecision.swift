import AMQP
import EventCore
import Fleet
import Foundation
import Histogram

/// How precisely the fleet's delay levels deliver timeouts: `fleet bench --timeouts N`.
///
/// Schedules `count` messages through the topology's delay levels exactly as a worker schedules a timeout (the
/// delay rounded up to whole seconds, the due time in `x-fleet-due-at`), due at random times spread over
/// `spread` seconds, all pending at once, into a queue of its own bound to the delivery exchange; then measures
/// each one's lateness on arrival. A worker sends a message that arrives early back to wait, so early
/// arrivals are counted apart: they must be none.
enum TimeoutPrecision {
    /// What a run saw.
    struct Report: Codable {
        var scheduled: Int
        var received: Int
        var early: Int
        var publishSeconds: Double
        var latenessMilliseconds: [String: Double]
    }

    static func measure(connection: AMQPConnection, topology: Topology, count: Int, spread: Int) async throws -> Report {
        let levels = topology.fleet.delay
        let queue = "fleet-bench.timeouts.\(UInt32.random(in: 0...UInt32.max))"
        try await connection.declare(QueueDeclaration(name: queue, durable: true, autoDelete: false))
        let anyDelay = Array(repeating: "*", count: levels.levels).joined(separator: ".")
        try await connection.declare(BindingDeclaration(source: levels.deliveryExchange, destination: queue, routingKey: "\(anyDelay).\(queue)"))
        let consumer = try await connection.consume(queue: queue, prefetch: 2000, noAck: true)

        let receiving = Task { () -> (Int, Int, Histogram<UInt64>) in
            var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
            var received = 0, early = 0
            for try await delivery in consumer {
                let arrival = Date().timeIntervalSince1970 * 1000
                guard let due = delivery.properties.headers?[Envelope.Header.dueAt]?.intValue else { continue }
                let lateness = arrival - Double(due)
                if lateness < 0 { early += 1 } else { _ = histogram.record(UInt64(lateness * 1000)) }
                received += 1
                if received == count { break }
            }
            return (received, early, histogram)
        }

        let publisher = try await connection.makePublisher(window: 1024)
        let started = ContinuousClock.now
        var batch: [AMQPMessage] = []
        for index in 0..<count {
            let now = Date()
            let dueAt = now.addingTimeInterval(1 + Double.random(in: 0..<Double(max(1, spread - 1))))
            let seconds = Int(dueAt.timeIntervalSince(now).rounded(.up))
            var properties = AMQPProperties.persistent
            properties.messageID = "timeout-\(index)"
            properties.type = "ProcessTimeoutDue"
            properties.headers = [Envelope.Header.dueAt: .int64(Int64((dueAt.timeIntervalSince1970 * 1000).rounded(.up)))]
            batch.append(AMQPMessage(body: Data(#"{"timeout":"bench"}"#.utf8), exchange: levels.entryExchange,
                                     routingKey: levels.routingKey(delaySeconds: seconds, destination: queue), properties: properties))
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
        let (received, early, histogram) = try await receiving.value
        deadline.cancel()
        try? await consumer.cancel()
        _ = try? await connection.deleteQueue(queue)
        func milliseconds(_ percentile: Double) -> Double { Double(histogram.valueAtPercentile(percentile)) / 1000 }
        return Report(
            scheduled: count, received: received, early: early,
            publishSeconds: published.seconds,
            latenessMilliseconds: ["p50": milliseconds(50), "p90": milliseconds(90), "p99": milliseconds(99), "max": Double(histogram.maxRecorded) / 1000]
        )
    }
}
