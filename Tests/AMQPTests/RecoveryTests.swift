import AMQP
import FleetTestSupport
import Foundation
import Synchronization
import Testing

/// Tests that stop and start a broker. They use the second node the test script starts, so that no other test
/// sees the outage, and they run one at a time.
@Suite("AMQP recovery on a broker that restarts", .serialized, .timeLimit(.minutes(5)))
struct RecoveryTests {
    static func connect() async throws -> AMQPConnection {
        try await AMQPConnection.connect(url: "amqp://guest:guest@127.0.0.1:\(TestBroker.disruptivePort)/?heartbeat=5")
    }

    @Test func aBrokerRestartMidConsumeLosesNoConfirmedMessageAndTheConsumerResumes() async throws {
        let publishing = try await Self.connect()
        let consuming = try await Self.connect()
        let queue = TestBroker.uniqueName("restart")
        try await publishing.declare(QueueDeclaration(name: queue, durable: true, arguments: ["x-queue-type": "quorum"]))
        try await consuming.declare(QueueDeclaration(name: queue, durable: true, arguments: ["x-queue-type": "quorum"]))
        let publisher = try await publishing.makePublisher()
        let consumer = try await consuming.consume(queue: queue, prefetch: 50)

        let confirmed = Mutex<Set<Int>>([])
        let received = Mutex<Set<Int>>([])
        let total = 3000

        let consuming_ = Task {
            for try await delivery in consumer {
                let index = Int(String(decoding: delivery.body, as: UTF8.self)) ?? -1
                // An acknowledgement for a delivery from before the restart is stale: it comes again.
                do {
                    try delivery.ack()
                    received.withLock { _ = $0.insert(index) }
                } catch let error as AMQPError where error.code == .staleDelivery {
                    continue
                }
                if received.withLock({ $0.count }) == total { return }
            }
        }

        let publishing_ = Task {
            for index in 0..<total {
                // Publish until confirmed: a failure during the outage means "unknown", so send again.
                while true {
                    do {
                        try await publisher.publish(String(index), exchange: "", routingKey: queue)
                        confirmed.withLock { _ = $0.insert(index) }
                        break
                    } catch {
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }
                if index == total / 3 {
                    try await TestBroker.disruptiveControl("stop_app")
                    try await TestBroker.disruptiveControl("start_app")
                }
            }
        }
        try await publishing_.value
        let allReceived = try await TestBroker.eventually(90) { received.withLock { $0.count } == total }
        consuming_.cancel()
        #expect(confirmed.withLock { $0.count } == total)
        #expect(allReceived, "received \(received.withLock { $0.count }) of \(total)")
        #expect(confirmed.withLock { $0 }.isSubset(of: received.withLock { $0 }))
        #expect(publishing.recoveryCount >= 1)
        #expect(consuming.recoveryCount >= 1)
        #expect(consuming.isConnected)
        try await consuming.deleteQueue(queue)
        await publishing.close()
        await consuming.close()
    }

    @Test func theBrokerBlockingPublishersIsNoticed() async throws {
        let connection = try await Self.connect()
        let queue = TestBroker.uniqueName("blocked")
        try await connection.declare(QueueDeclaration(name: queue, durable: false, autoDelete: false))
        let publisher = try await connection.makePublisher()
        try await publisher.publish("before", exchange: "", routingKey: queue)
        #expect(!connection.isBlocked)
        try await TestBroker.disruptiveControl("set_vm_memory_high_watermark", "0.000001")
        // The publish after the alarm is held by the broker until the alarm clears; the alarm is cleared
        // whatever happens, so no other test finds the node blocked.
        let held = Task { try await publisher.publish("during", exchange: "", routingKey: queue) }
        let blocked = await (try? TestBroker.eventually(30) { connection.isBlocked }) ?? false
        try await TestBroker.disruptiveControl("set_vm_memory_high_watermark", "0.4")
        #expect(blocked)
        try await held.value
        let unblocked = try await TestBroker.eventually(30) { !connection.isBlocked }
        #expect(unblocked)
        try await connection.deleteQueue(queue)
        await connection.close()
    }

    /// Messages waiting for room in the confirm window when the connection is lost fail with it (they were
    /// never sent; the caller sends them again). They used to stay queued with nothing to send them, and the
    /// task that published them waited until someone published again on that publisher, if ever.
    @Test func messagesWaitingForRoomInTheWindowFailWhenTheConnectionIsLost() async throws {
        let connection = try await Self.connect()
        let queue = TestBroker.uniqueName("backlog")
        try await connection.declare(QueueDeclaration(name: queue, durable: false, autoDelete: false))
        let publisher = try await connection.makePublisher(window: 1)
        try await publisher.publish("before", exchange: "", routingKey: queue)
        // The alarm holds the confirm of the first message; the other nine wait for room behind it.
        try await TestBroker.disruptiveControl("set_vm_memory_high_watermark", "0.000001")
        let messages = (0..<10).map { AMQPMessage(body: Data("\($0)".utf8), exchange: "", routingKey: queue) }
        let publishing = Task { await publisher.publish(contentsOf: messages) }
        let blocked = await (try? TestBroker.eventually(30) { connection.isBlocked }) ?? false
        // The broker drops the connection; the alarm is cleared whatever happens, so no other test finds the
        // node blocked.
        let closed = try? await TestBroker.disruptiveControl("close_all_connections", "test of a lost connection")
        try await TestBroker.disruptiveControl("set_vm_memory_high_watermark", "0.4")
        #expect(blocked)
        #expect(closed != nil)
        // Every result arrives (the wait is bounded only so that a regression fails instead of hanging).
        let results = await withTaskGroup(of: [Result<Void, AMQPError>]?.self) { group in
            group.addTask { await publishing.value }
            group.addTask {
                try? await Task.sleep(for: .seconds(120))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        #expect(results?.count == messages.count, "the publication of messages queued behind the window never ended")
        let failed = results?.filter { if case .failure = $0 { return true } else { return false } }.count ?? 0
        #expect(failed >= messages.count - 1, "the messages behind the window were sent or confirmed: \(results.map { "\($0)" } ?? "none")")
        let recovered = try await TestBroker.eventually(60) { connection.isConnected }
        #expect(recovered)
        try await connection.deleteQueue(queue)
        await connection.close()
    }
}
