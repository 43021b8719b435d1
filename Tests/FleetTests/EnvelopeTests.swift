import AMQP
import Fleet
import Foundation
import Testing

@Suite("Envelopes from the fleet's own and from foreign messages")
struct EnvelopeTests {
    static let ownRoute = Route(queue: "fleet.orders", handler: "order-fulfillment")
    static let foreignRoute = Route(queue: "fleet.legacy-payments", handler: "order-fulfillment", foreign: [
        ForeignMapping(routingKey: "settlement.completed", eventType: "PaymentConfirmed", correlationPointer: "/order_id", messageIDPointer: "/settlement_id"),
        ForeignMapping(header: .init(name: "x-kind", value: "declined"), eventType: "PaymentFailed", correlationPointer: "/order/id"),
    ])

    static func properties(type: String? = "PaymentConfirmed", id: String? = "m-1") -> AMQPProperties {
        var properties = AMQPProperties.persistent
        properties.contentType = "application/json"
        properties.type = type
        properties.messageID = id
        properties.correlationID = "order-1"
        properties.headers = ["x-causation-id": "c-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]
        return properties
    }

    @Test func theFleetsOwnMessagesRoundTrip() throws {
        let envelope = Envelope(messageID: "e-1", eventType: "PaymentConfirmed", correlationID: "order-1", causationID: "c-0",
                                traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", body: Data(#"{"order_id":"order-1"}"#.utf8),
                                timestamp: Date(timeIntervalSince1970: 1_800_000_000), queue: "fleet.orders", routingKey: "payment.confirmed",
                                attempt: 2, streamID: "order-1", streamVersion: 3, globalPosition: 99)
        let decoded = try EnvelopeDecoder(route: Self.ownRoute).decode(body: envelope.body, properties: envelope.properties, routingKey: "payment.confirmed", queue: "fleet.orders")
        #expect(decoded == envelope)
        #expect(envelope.properties.deliveryMode == 2)
        #expect(envelope.properties.contentType == "application/json")
    }

    @Test func foreignMessagesAreMappedByRoutingKeyWithIdsFromTheBody() throws {
        var properties = AMQPProperties()
        properties.contentType = "application/json"
        let body = Data(#"{"order_id": 4711, "settlement_id": "s-9", "amount": 12.5}"#.utf8)
        let envelope = try EnvelopeDecoder(route: Self.foreignRoute).decode(body: body, properties: properties, routingKey: "settlement.completed", queue: "fleet.legacy-payments")
        #expect(envelope.eventType == "PaymentConfirmed")
        #expect(envelope.correlationID == "4711")
        #expect(envelope.messageID == "PaymentConfirmed:s-9")
    }

    @Test func foreignMessagesAreMappedByHeaderAndKeepTheirMessageID() throws {
        var properties = AMQPProperties()
        properties.messageID = "legacy-77"
        properties.headers = ["x-kind": "declined"]
        let body = Data(#"{"order": {"id": "o-5"}}"#.utf8)
        let envelope = try EnvelopeDecoder(route: Self.foreignRoute).decode(body: body, properties: properties, routingKey: "anything", queue: "fleet.legacy-payments")
        #expect(envelope.eventType == "PaymentFailed")
        #expect(envelope.correlationID == "o-5")
        #expect(envelope.messageID == "legacy-77")
    }

    static let hostile: [(String, Data, AMQPProperties, EnvelopeError.Code)] = [
        ("not JSON", Data("payment ok".utf8), properties(), .malformedBody),
        ("JSON array", Data("[1,2]".utf8), properties(), .malformedBody),
        ("truncated", Data(#"{"order_id": "o"#.utf8), properties(), .malformedBody),
        ("invalid UTF-8", Data([0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x7D]), properties(), .malformedBody),
        ("deep nesting", Data((String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)).utf8), properties(), .malformedBody),
        ("no type", Data("{}".utf8), properties(type: nil), .missingEventType),
        ("no message id", Data("{}".utf8), properties(id: nil), .missingMessageID),
        ("huge type", Data("{}".utf8), properties(type: String(repeating: "T", count: 300)), .unknownEventType),
        ("xml", Data("<a/>".utf8), { var p = properties(); p.contentType = "application/xml"; return p }(), .unsupportedContentType),
        ("too large", Data(repeating: 0x20, count: (1 << 20) + 1), properties(), .bodyTooLarge),
    ]

    @Test(arguments: 0..<hostile.count)
    func hostileMessagesAreRefusedWithAReason(index: Int) {
        let (name, body, properties, expected) = Self.hostile[index]
        do {
            _ = try EnvelopeDecoder(route: Self.ownRoute).decode(body: body, properties: properties, routingKey: "k", queue: "fleet.orders")
            Issue.record("\(name) was accepted")
        } catch {
            #expect(error.code == expected, "\(name): \(error)")
            #expect(!error.detail.isEmpty)
        }
    }

    @Test func aForeignMessageWithoutItsCorrelationIDIsRefused() {
        do {
            _ = try EnvelopeDecoder(route: Self.foreignRoute).decode(body: Data(#"{"settlement_id":"s"}"#.utf8), properties: AMQPProperties(),
                                                                     routingKey: "settlement.completed", queue: "fleet.legacy-payments")
            Issue.record("accepted without a correlation id")
        } catch {
            #expect(error.code == .missingCorrelationID)
            #expect(error.detail.contains("/order_id"))
        }
    }

    @Test func aForeignMessageNoMappingMatchesIsRefused() {
        do {
            _ = try EnvelopeDecoder(route: Self.foreignRoute).decode(body: Data("{}".utf8), properties: AMQPProperties(),
                                                                     routingKey: "settlement.unknown", queue: "fleet.legacy-payments")
            Issue.record("accepted without a mapping")
        } catch {
            #expect(error.code == .missingEventType)
        }
    }
}
