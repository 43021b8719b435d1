import AMQP
import FleetTestSupport
import Foundation
import Testing

/// Integration tests against the RabbitMQ the test script starts on loopback.
@Suite("AMQP client against a real broker", .timeLimit(.minutes(5)))
struct BrokerTests {
    @Test func everyPropertyAndHeaderTypeRoundTrips() async throws {
        let connection = try await TestBroker.connect()
        let queue = TestBroker.uniqueName("roundtrip")
        try await connection.declare(QueueDeclaration(name: queue, durable: false, autoDelete: true))
        let publisher = try await connection.makePublisher()
        let when = Date(timeIntervalSince1970: 1_790_000_000)
        let headers: AMQPTable = [
            "bool": .bool(true),
            "int8": .int8(-8),
            "uint8": .uint8(200),
            "int16": .int16(-1600),
            "uint16": .uint16(60000),
            "int32": .int32(-320_000),
            "uint32": .uint32(4_000_000_000),
            "int64": .int64(-64_000_000_000),
            "float": .float(1.5),
            "double": .double(-2.25),
            "decimal": .decimal(scale: 2, value: 12345),
            "string": .string("zürich ✓"),
            "bytes": .bytes([0, 1, 2, 255]),
            "array": .array([.int32(1), .string("two"), .array([.bool(false)]), .table(["k": .string("v")])]),
            "timestamp": .timestamp(when),
            "table": .table(["nested": .table(["deeper": .int64(42)]), "list": .array([])]),
            "void": .void,
        ]
        var properties = AMQPProperties()
        properties.contentType = "application/json"
        properties.contentEncoding = "identity"
        properties.headers = headers
        properties.deliveryMode = 2
        properties.priority = 7
        properties.correlationID = "order-17"
        properties.replyTo = "replies"
        properties.expiration = "60000"
        properties.messageID = "0195f3c2-0000-7000-8000-000000000001"
        properties.timestamp = when
        properties.type = "PaymentConfirmed"
        properties.userID = "guest"
        properties.appID = "tests"
        properties.clusterID = "cluster-a"
        let body = Data((0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try await publisher.publish(body, exchange: "", routingKey: queue, properties: properties)

        let delivery = try #require(try await connection.get(queue: queue))
        #expect(delivery.body == body)
        #expect(delivery.routingKey == queue)
        let received = delivery.properties
        #expect(received.contentType == properties.contentType)
        #expect(received.contentEncoding == properties.contentEncoding)
        #expect(received.deliveryMode == 2)
        #expect(received.priority == 7)
        #expect(received.correlationID == "order-17")
        #expect(received.replyTo == "replies")
        #expect(received.expiration == "60000")
        #expect(received.messageID == properties.messageID)
        #expect(received.timestamp == when)
        #expect(received.type == "PaymentConfirmed")
        #expect(received.userID == "guest")
        #expect(received.appID == "tests")
        #expect(received.clusterID == "cluster-a")
        #expect(received.headers == headers)
        try delivery.ack()
        await connection.close()
    }

    @Test func tenThousandConfirmedMessagesAreAllStored() async throws {
        let connection = try await TestBroker.connect()
        let queue = TestBroker.uniqueName("confirms")
        try await connection.declare(QueueDeclaration(name: queue, durable: true))
        let publisher = try await connection.makePublisher(window: 256)
        let count = 10_000
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<16 {
                group.addTask {
                    for index in stride(from: worker, to: count, by: 16) {
                        var properties = AMQPProperties.persistent
                        properties.messageID = String(index)
                        try await publisher.publish("message \(index)", exchange: "", routingKey: queue, properties: properties)
                    }
                }
            }
            try await group.waitForAll()
        }
        let state = try await connection.declare(QueueDeclaration(name: queue), passive: true)
        #expect(state.messageCount == UInt32(count))

        let consumer = try await connection.consume(queue: queue, prefetch: 500)
        var seen = Set<String>()
        for try await delivery in consumer {
            seen.insert(delivery.properties.messageID ?? "")
            try delivery.ack()
            if seen.count == count { break }
        }
        #expect(seen == Set((0..<count).map(String.init)))
        try await consumer.cancel()
        try await connection.deleteQueue(queue)
        await connection.close()
    }

    @Test func anUnroutableMandatoryPublishIsReturned() async throws {
        let connection = try await TestBroker.connect()
        let exchange = TestBroker.uniqueName("nowhere")
        try await connection.declare(ExchangeDeclaration(name: exchange, type: "direct", durable: false, autoDelete: false))
        let publisher = try await connection.makePublisher()
        do {
            try await publisher.publish("lost", exchange: exchange, routingKey: "no.such.binding", mandatory: true)
            Issue.record("an unroutable mandatory message was confirmed")
        } catch {
            #expect(error.code == .messageReturned)
            #expect(error.replyCode == 312)
            #expect(error.replyText == "NO_ROUTE")
        }
        // Without mandatory the broker drops it and confirms.
        try await publisher.publish("dropped", exchange: exchange, routingKey: "no.such.binding")
        // A routable mandatory message is confirmed normally.
        let queue = TestBroker.uniqueName("routed")
        try await connection.declare(QueueDeclaration(name: queue, durable: false, autoDelete: true))
        try await connection.declare(BindingDeclaration(source: exchange, destination: queue, routingKey: "yes"))
        try await publisher.publish("kept", exchange: exchange, routingKey: "yes", mandatory: true)
        let kept = try #require(try await connection.get(queue: queue, noAck: true))
        #expect(String(decoding: kept.body, as: UTF8.self) == "kept")
        try await connection.deleteExchange(exchange)
        await connection.close()
    }

    @Test func nackWithRequeueRedelivers() async throws {
        let connection = try await TestBroker.connect()
        let queue = TestBroker.uniqueName("requeue")
        try await connection.declare(QueueDeclaration(name: queue, durable: false, autoDelete: false))
        let publisher = try await connection.makePublisher()
        try await publisher.publish("again", exchange: "", routingKey: queue)
        let consumer = try await connection.consume(queue: queue, prefetch: 1)
        var iterator = consumer.makeAsyncIterator()
        let first = try #require(try await iterator.next())
        #expect(!first.redelivered)
        try first.nack(requeue: true)
        let second = try #require(try await iterator.next())
        #expect(second.redelivered)
        #expect(second.body == first.body)
        try second.reject(requeue: true)
        let third = try #require(try await iterator.next())
        #expect(third.redelivered)
        try third.ack()
        try await consumer.cancel()
        let state = try await connection.declare(QueueDeclaration(name: queue, durable: false), passive: true)
        #expect(state.messageCount == 0)
        try await connection.deleteQueue(queue)
        await connection.close()
    }

    @Test func rejectDeadLettersWithXDeath() async throws {
        let connection = try await TestBroker.connect()
        let deadLetterExchange = TestBroker.uniqueName("dlx")
        let deadLetters = TestBroker.uniqueName("dead")
        let work = TestBroker.uniqueName("work")
        try await connection.declare(ExchangeDeclaration(name: deadLetterExchange, type: "fanout", durable: false, autoDelete: false))
        try await connection.declare(QueueDeclaration(name: deadLetters, durable: false, autoDelete: false))
        try await connection.declare(BindingDeclaration(source: deadLetterExchange, destination: deadLetters))
        try await connection.declare(QueueDeclaration(name: work, durable: false, autoDelete: false,
                                                      arguments: ["x-dead-letter-exchange": .string(deadLetterExchange)]))
        let publisher = try await connection.makePublisher()
        var properties = AMQPProperties.persistent
        properties.messageID = "poison-1"
        try await publisher.publish("poison", exchange: "", routingKey: work, properties: properties)
        let consumer = try await connection.consume(queue: work)
        var iterator = consumer.makeAsyncIterator()
        let delivery = try #require(try await iterator.next())
        try delivery.reject(requeue: false)

        var deadLetter: AMQPDelivery?
        _ = try await TestBroker.eventually {
            deadLetter = try await connection.get(queue: deadLetters)
            return deadLetter != nil
        }
        let dead = try #require(deadLetter)
        #expect(dead.properties.messageID == "poison-1")
        let deaths = try #require(dead.properties.headers?["x-death"]?.arrayValue)
        let death = try #require(deaths.first?.tableValue)
        #expect(death["queue"]?.stringValue == work)
        #expect(death["reason"]?.stringValue == "rejected")
        #expect(death["count"]?.intValue == 1)
        try dead.ack()
        try await consumer.cancel()
        try await connection.deleteQueue(work)
        try await connection.deleteQueue(deadLetters)
        try await connection.deleteExchange(deadLetterExchange)
        await connection.close()
    }

    @Test func consumerCancelEndsTheSequenceAndRequeuesUnacked() async throws {
        let connection = try await TestBroker.connect()
        let queue = TestBroker.uniqueName("cancel")
        try await connection.declare(QueueDeclaration(name: queue, durable: false, autoDelete: false))
        let publisher = try await connection.makePublisher()
        for index in 0..<3 { try await publisher.publish("m\(index)", exchange: "", routingKey: queue) }
        let consumer = try await connection.consume(queue: queue, prefetch: 10)
        var iterator = consumer.makeAsyncIterator()
        let first = try #require(try await iterator.next())
        try first.ack()
        try await consumer.cancel()
        // The two unacknowledged deliveries are back in the queue.
        let back = try await TestBroker.eventually {
            try await connection.declare(QueueDeclaration(name: queue, durable: false), passive: true).messageCount == 2
        }
        #expect(back)
        #expect(try await connection.purgeQueue(queue) == 2)
        #expect(try await connection.get(queue: queue) == nil)
        try await connection.deleteQueue(queue)
        await connection.close()
    }

    @Test func ackMultipleSettlesEveryEarlierDelivery() async throws {
        let connection = try await TestBroker.connect()
        let queue = TestBroker.uniqueName("multiple")
        try await connection.declare(QueueDeclaration(name: queue, durable: false, autoDelete: false))
        let publisher = try await connection.makePublisher()
        for index in 0..<10 { try await publisher.publish("m\(index)", exchange: "", routingKey: queue) }
        let consumer = try await connection.consume(queue: queue, prefetch: 10)
        var last: AMQPDelivery?
        var received = 0
        for try await delivery in consumer {
            received += 1
            last = delivery
            if received == 10 { break }
        }
        try #require(last).ack(multiple: true)
        try await consumer.cancel()
        let state = try await connection.declare(QueueDeclaration(name: queue, durable: false), passive: true)
        #expect(state.messageCount == 0)
        try await connection.deleteQueue(queue)
        await connection.close()
    }

    @Test func declaresEveryArgumentTypeAQueueTakes() async throws {
        let connection = try await TestBroker.connect()
        let quorum = TestBroker.uniqueName("quorum")
        let state = try await connection.declare(QueueDeclaration(name: quorum, durable: true, arguments: [
            "x-queue-type": "quorum", "x-delivery-limit": .int32(5), "x-dead-letter-exchange": "",
            "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish", "x-single-active-consumer": true,
        ]))
        #expect(state.name == quorum)
        let ttl = TestBroker.uniqueName("ttl")
        try await connection.declare(QueueDeclaration(name: ttl, durable: true, arguments: [
            "x-message-ttl": .int32(2000), "x-dead-letter-exchange": "amq.direct", "x-dead-letter-routing-key": "expired",
        ]))
        let stream = TestBroker.uniqueName("stream")
        try await connection.declare(QueueDeclaration(name: stream, durable: true, arguments: [
            "x-queue-type": "stream", "x-max-age": "1D", "x-max-length-bytes": .int64(100_000_000),
        ]))
        // A server-named, exclusive queue.
        let temporary = try await connection.declare(QueueDeclaration(name: "", durable: false, exclusive: true, autoDelete: true))
        #expect(temporary.name.hasPrefix("amq.gen-"))
        for name in [quorum, ttl, stream] { try await connection.deleteQueue(name) }
        await connection.close()
    }

    @Test func passiveDeclareOfAMissingQueueIsNotFoundAndTheConnectionGoesOn() async throws {
        let connection = try await TestBroker.connect()
        do {
            try await connection.declare(QueueDeclaration(name: TestBroker.uniqueName("missing")), passive: true)
            Issue.record("a missing queue was found")
        } catch {
            #expect(error.code == .notFound)
            #expect(error.replyCode == 404)
        }
        // The channel the broker closed is replaced; the connection still works.
        let queue = TestBroker.uniqueName("after")
        let state = try await connection.declare(QueueDeclaration(name: queue, durable: false, autoDelete: true))
        #expect(state.messageCount == 0)
        await connection.close()
    }

    @Test func publishingToAMissingExchangeFailsAndThePublisherRecovers() async throws {
        let connection = try await TestBroker.connect()
        let publisher = try await connection.makePublisher()
        do {
            try await publisher.publish("x", exchange: TestBroker.uniqueName("absent"), routingKey: "k")
            Issue.record("a publish to a missing exchange was confirmed")
        } catch {
            #expect(error.code == .notFound)
        }
        let queue = TestBroker.uniqueName("recovered")
        try await connection.declare(QueueDeclaration(name: queue, durable: false, autoDelete: true))
        try await publisher.publish("y", exchange: "", routingKey: queue)
        let delivery = try await connection.get(queue: queue, noAck: true)
        #expect(delivery.map { String(decoding: $0.body, as: UTF8.self) } == "y")
        await connection.close()
    }

    @Test func aConflictingDeclarationIsAPreconditionFailure() async throws {
        let connection = try await TestBroker.connect()
        let queue = TestBroker.uniqueName("conflict")
        try await connection.declare(QueueDeclaration(name: queue, durable: true, arguments: ["x-queue-type": "quorum"]))
        do {
            try await connection.declare(QueueDeclaration(name: queue, durable: true, arguments: ["x-queue-type": "classic"]))
            Issue.record("a conflicting declaration succeeded")
        } catch {
            #expect(error.code == .preconditionFailed)
            #expect(error.replyCode == 406)
            #expect(error.replyText?.contains("x-queue-type") == true)
            #expect(!error.isRetryable)
        }
        try await connection.deleteQueue(queue)
        await connection.close()
    }

    @Test func wrongPasswordIsAnAuthenticationFailure() async throws {
        do {
            _ = try await TestBroker.connect { $0.password = "not-the-password" }
            Issue.record("a wrong password was accepted")
        } catch {
            #expect(error.code == .authenticationFailed)
            #expect(!error.description.contains("not-the-password"))
        }
    }

    @Test func anUnknownVirtualHostIsRefused() async throws {
        do {
            _ = try await TestBroker.connect { $0.virtualHost = "no-such-vhost" }
            Issue.record("an unknown virtual host was accepted")
        } catch {
            #expect(error.code == .virtualHostNotAllowed)
            #expect(error.replyCode == 530)
        }
    }

    @Test func aClosedPortIsConnectionRefused() async throws {
        do {
            _ = try await TestBroker.connect { $0.port = 1; $0.connectTimeout = .seconds(2) }
            Issue.record("connected to a closed port")
        } catch {
            #expect(error.code == .connectionRefused)
            #expect(error.isRetryable)
        }
    }

    @Test func theProjectsOwnVirtualHostAndUserWork() async throws {
        let connection = try await TestBroker.connect { $0.virtualHost = "fleet"; $0.user = "fleet"; $0.password = "fleet"; $0.connectionName = "vhost-test" }
        let queue = TestBroker.uniqueName("vhost")
        try await connection.declare(QueueDeclaration(name: queue, durable: false, autoDelete: true))
        #expect(connection.isConnected)
        await connection.close()
        #expect(!connection.isConnected)
    }

    @Test func heartbeatsKeepAnIdleConnectionAlive() async throws {
        let connection = try await TestBroker.connect { $0.heartbeat = 2 }
        // Idle for several heartbeat intervals: without heartbeats the broker would close the connection
        // (it gives up after two missed ones).
        try await Task.sleep(for: .seconds(7))
        #expect(connection.isConnected)
        #expect(connection.recoveryCount == 0)
        let queue = TestBroker.uniqueName("heartbeat")
        try await connection.declare(QueueDeclaration(name: queue, durable: false, autoDelete: true))
        await connection.close()
    }

    @Test func tlsConnectsWhenTheCertificateVerifies() async throws {
        let ca = "\(TestBroker.runDirectory)/rabbitmq/tls/ca.pem"
        let connection = try await AMQPConnection.connect(url: "amqps://guest:guest@localhost:\(TestBroker.tlsPort)/?cacertfile=\(ca)")
        let queue = TestBroker.uniqueName("tls")
        try await connection.declare(QueueDeclaration(name: queue, durable: false, autoDelete: true))
        let publisher = try await connection.makePublisher()
        try await publisher.publish("over tls", exchange: "", routingKey: queue)
        let delivery = try await connection.get(queue: queue, noAck: true)
        #expect(delivery.map { String(decoding: $0.body, as: UTF8.self) } == "over tls")
        await connection.close()
    }

    @Test func tlsRefusesABrokerItCannotVerify() async throws {
        // The system trust store does not know the test's CA: peer verification (on by default) must fail.
        do {
            _ = try await AMQPConnection.connect(url: "amqps://guest:guest@localhost:\(TestBroker.tlsPort)/")
            Issue.record("an unverifiable certificate was accepted")
        } catch {
            #expect(error.code == .tlsFailure)
        }
        // The certificate names localhost and 127.0.0.1, not another host name.
        let ca = "\(TestBroker.runDirectory)/rabbitmq/tls/ca.pem"
        do {
            _ = try await AMQPConnection.connect(url: "amqps://guest:guest@127.0.0.2:\(TestBroker.tlsPort)/?cacertfile=\(ca)")
            Issue.record("connected to a host the certificate does not name")
        } catch {
            #expect(error.code == .tlsFailure || error.code == .connectionRefused)
        }
    }
}
