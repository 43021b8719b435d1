import AMQP
import EventCore
import EventCoreTestKit
import Fleet
import Foundation
import OrderFulfillment
import Processes

/// One message as a hostile (or careless) publisher could send it to the fleet.
struct HostileMessage: Sendable {
    /// What the message is, for failure messages.
    var name: String
    /// Where it is published.
    var exchange: String
    var routingKey: String
    /// The routed queue it lands in.
    var queue: String
    var body: Data
    var properties: AMQPProperties
    /// The `x-fleet-error` it must be dead-lettered with, when that is known without running its handler;
    /// nil for a message that must be handled (it is valid, or harmless).
    var expectedReason: String?
}

/// The hostile corpus: named cases, each aimed at one way of breaking the decoder or a handler, and seeded
/// mutations of valid messages. Everything is generated in code, so the repository holds no large files and
/// the same seed always gives the same bytes.
enum HostileCorpus {
    static let orders = "fleet.orders", bookings = "fleet.bookings", legacy = "fleet.legacy-payments", timeouts = "fleet.timeouts"

    static func json(_ object: [String: Any]) -> Data {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
    }

    static func properties(type: String?, id: String?, correlation: String? = nil, headers: AMQPTable? = nil) -> AMQPProperties {
        var properties = AMQPProperties.persistent
        properties.contentType = "application/json"
        properties.type = type
        properties.messageID = id
        properties.correlationID = correlation
        properties.headers = headers
        return properties
    }

    /// A valid `OrderPlaced` for `order`.
    static func orderPlaced(_ order: String, id: String, headers: AMQPTable? = nil, name: String = "valid OrderPlaced") -> HostileMessage {
        HostileMessage(name: name, exchange: "domain.events", routingKey: "order.placed", queue: orders,
                       body: json(["order_id": order, "total_cents": 1200]),
                       properties: properties(type: OrderPlaced.typeName, id: id, correlation: order, headers: headers), expectedReason: nil)
    }

    static func order(_ name: String, _ body: Data, type: String? = PaymentConfirmed.typeName, id: String?, correlation: String? = nil,
                      headers: AMQPTable? = nil, contentType: String? = "application/json", reason: String?) -> HostileMessage {
        var properties = properties(type: type, id: id, correlation: correlation, headers: headers)
        properties.contentType = contentType
        return HostileMessage(name: name, exchange: "domain.events", routingKey: "payment.confirmed", queue: orders, body: body,
                              properties: properties, expectedReason: reason)
    }

    static func settlement(_ name: String, _ body: Data, routingKey: String = "settlement.completed", correlation: String? = nil,
                           reason: String? = nil) -> HostileMessage {
        var properties = AMQPProperties.persistent
        properties.contentType = "application/json"
        properties.correlationID = correlation
        return HostileMessage(name: name, exchange: "legacy.payments", routingKey: routingKey, queue: legacy, body: body,
                              properties: properties, expectedReason: reason)
    }

    static func tripRequest(trip: String) -> Data {
        let saga = TravelBookingSaga(tripID: trip, hotel: .init(resourceID: "h-1", bookingID: "\(trip)-hotel"),
                                     flight: .init(resourceID: "f-1", bookingID: "\(trip)-flight"), car: .init(resourceID: "c-1", bookingID: "\(trip)-car"))
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return (try? encoder.encode(saga)) ?? Data()
    }

    static func timeoutBody(order: String) -> Data {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .millisecondsSince1970
        encoder.outputFormatting = .sortedKeys
        let process = try! OrderFulfillmentProcess.processID(orderID: order)
        return (try? encoder.encode(ScheduledTimeout(processID: process, timeoutID: "t-\(order)", dueAt: Date(timeIntervalSince1970: 1_800_000_000), attempt: 1))) ?? Data()
    }

    /// Nesting `depth` levels deep: `[[[...]]]`.
    static func nested(_ depth: Int, open: String = "[", close: String = "]") -> Data {
        Data((String(repeating: open, count: depth) + String(repeating: close, count: depth)).utf8)
    }

    /// A header table of entries of 25 bytes each that is `bytes` long in the AMQP encoding.
    static func wideHeaders(bytes: Int) -> AMQPTable {
        var table: AMQPTable = [:]
        let count = (bytes - 4) / 25
        for index in 0..<count {
            let key = "h-" + String(repeating: "0", count: 5 - String(index).count) + String(index)
            table[key] = .string(String(repeating: "v", count: 12 + (index == count - 1 ? (bytes - 4) % 25 : 0)))
        }
        return table
    }

    /// The named cases; `tag` makes their ids and order ids unique to one use (ids of hostile messages are
    /// the same in every round, so a round can be repeated identically).
    static func named(tag: String) -> [HostileMessage] {
        let a = "\(tag)-order-a", b = "\(tag)-order-b"
        let valid = json(["order_id": a, "payment_id": "p-1"])
        let farFuture = Int64(Date().addingTimeInterval(100 * 366 * 86_400).timeIntervalSince1970 * 1000)
        var cases: [HostileMessage] = [
            order("not JSON", Data("payment ok".utf8), id: "\(tag)-1", reason: "malformed-body"),
            order("empty body", Data(), id: "\(tag)-2", reason: "malformed-body"),
            order("JSON array", Data("[1,2]".utf8), id: "\(tag)-3", reason: "malformed-body"),
            order("JSON string", Data(#""order""#.utf8), id: "\(tag)-4", reason: "malformed-body"),
            order("JSON null", Data("null".utf8), id: "\(tag)-5", reason: "malformed-body"),
            order("truncated", valid.prefix(valid.count / 2), id: "\(tag)-6", reason: "malformed-body"),
            order("invalid UTF-8: 0xFF", Data([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D]), id: "\(tag)-7", reason: "malformed-body"),
            order("invalid UTF-8: overlong slash", Data([0x7B, 0x22, 0xC0, 0xAF, 0x22, 0x3A, 0x31, 0x7D]), id: "\(tag)-8", reason: "malformed-body"),
            order("invalid UTF-8: encoded surrogate", Data([0x7B, 0x22, 0xED, 0xA0, 0x80, 0x22, 0x3A, 0x31, 0x7D]), id: "\(tag)-9", reason: "malformed-body"),
            order("invalid UTF-8: cut sequence", Data([0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xE2, 0x82]), id: "\(tag)-10", reason: "malformed-body"),
            order("100,000 levels of [", nested(100_000), id: "\(tag)-11", reason: "malformed-body"),
            order("100,000 levels of {\"a\":", nested(100_000, open: #"{"a":"#, close: "}"), id: "\(tag)-12", reason: "malformed-body"),
            order("65 levels", Data((#"{"order_id":"# + String(repeating: "[", count: 64) + String(repeating: "]", count: 64) + "}").utf8),
                  id: "\(tag)-13", reason: "malformed-body"),
            order("a raw NUL outside strings", Data("{\u{0}}".utf8), id: "\(tag)-14", reason: "malformed-body"),
            order("a raw NUL inside a string", Data("{\"order_id\":\"a\u{0}b\"}".utf8), id: "\(tag)-15", reason: "malformed-body"),
            order("an escaped NUL in the order id", Data(#"{"order_id":"a\u0000b","payment_id":"p"}"#.utf8), id: "\(tag)-16", reason: "invalid-payload"),
            order("over the size limit", Data(repeating: 0x20, count: (1 << 20) + 1), id: "\(tag)-17", reason: "body-too-large"),
            order("a 900 KB order id", json(["order_id": String(repeating: "x", count: 900_000), "payment_id": "p"]), id: "\(tag)-18", reason: "invalid-payload"),
            order("XML", Data("<order/>".utf8), id: "\(tag)-19", contentType: "application/xml", reason: "unsupported-content-type"),
            order("no type", valid, type: nil, id: "\(tag)-20", reason: "missing-type"),
            order("no message id", valid, id: nil, reason: "missing-message-id"),
            order("an unknown type", valid, type: "PriceChanged", id: "\(tag)-22", reason: "unknown-type"),
            order("a type with a control character", valid, type: "Payment\u{1}Confirmed", id: "\(tag)-23", reason: "invalid-header"),
            order("a message id with NUL", valid, id: "\(tag)-24\u{0}forged", reason: "invalid-header"),
            order("a correlation id with a newline", valid, id: "\(tag)-25", correlation: "\(a)\nforged", reason: "invalid-header"),
            order("order_id a number", json(["order_id": 42, "payment_id": "p"]), id: "\(tag)-26", reason: "invalid-payload"),
            order("order_id a boolean", json(["order_id": true, "payment_id": "p"]), id: "\(tag)-27", reason: "invalid-payload"),
            order("order_id null", Data(#"{"order_id":null,"payment_id":"p"}"#.utf8), id: "\(tag)-28", reason: "invalid-payload"),
            order("order_id an object", json(["order_id": ["id": a], "payment_id": "p"]), id: "\(tag)-29", reason: "invalid-payload"),
            order("payment_id missing", json(["order_id": a]), id: "\(tag)-30", reason: "invalid-payload"),
            order("x-fleet-attempt a string", valid, id: "\(tag)-31", headers: [Envelope.Header.attempt: "3"], reason: "invalid-header"),
            order("x-fleet-attempt negative", valid, id: "\(tag)-32", headers: [Envelope.Header.attempt: .int32(-1)], reason: "invalid-header"),
            order("x-fleet-attempt Int64.max", valid, id: "\(tag)-33", headers: [Envelope.Header.attempt: .int64(.max)], reason: "invalid-header"),
            order("x-fleet-attempt UInt64.max", valid, id: "\(tag)-34", headers: [Envelope.Header.attempt: .uint64(.max)], reason: "invalid-header"),
            order("x-fleet-attempt a double", valid, id: "\(tag)-35", headers: [Envelope.Header.attempt: .double(1.5)], reason: "invalid-header"),
            order("x-fleet-due-at not a date", valid, id: "\(tag)-36", headers: [Envelope.Header.dueAt: "tomorrow"], reason: "invalid-header"),
            order("x-fleet-due-at a timestamp", valid, id: "\(tag)-37", headers: [Envelope.Header.dueAt: .timestamp(Date())], reason: "invalid-header"),
            order("x-fleet-due-at in 100 years", valid, id: "\(tag)-38", headers: [Envelope.Header.dueAt: .int64(farFuture)], reason: "invalid-header"),
            order("x-fleet-due-at Int64.max", valid, id: "\(tag)-39", headers: [Envelope.Header.dueAt: .int64(.max)], reason: "invalid-header"),
            order("x-causation-id a number", valid, id: "\(tag)-40", headers: [Envelope.Header.causationID: 7], reason: "invalid-header"),
            order("traceparent a table", valid, id: "\(tag)-41", headers: [Envelope.Header.traceparent: .table(["a": 1])], reason: "invalid-header"),
            order("x-causation-id invalid UTF-8", valid, id: "\(tag)-42", headers: [Envelope.Header.causationID: .bytes([0xFF, 0xFE])], reason: "invalid-header"),
            order("x-stream-version a string", valid, id: "\(tag)-43", headers: [Envelope.Header.streamVersion: "1"], reason: "invalid-header"),
            order("x-global-position negative", valid, id: "\(tag)-44", headers: [Envelope.Header.globalPosition: .int64(-5)], reason: "invalid-header"),
            order("forged x-fleet-error on a bad body", Data("{".utf8), id: "\(tag)-45",
                  headers: [Envelope.Header.error: "retries-exhausted", Envelope.Header.worker: "someone-else"], reason: "malformed-body"),
            order("forged x-death on a bad body", Data("{".utf8), id: "\(tag)-46",
                  headers: ["x-death": .array([.table(["queue": "fleet.orders", "reason": "rejected", "count": .int64(99)])])], reason: "malformed-body"),
            // Fits in a frame as sent, but not once the failure headers are added to dead-letter it.
            order("a 130 KB header table on a bad body", Data("{".utf8), id: "\(tag)-47", headers: wideHeaders(bytes: 130_900), reason: "malformed-body"),
            // Another process's id: a payment for order A that names order B.
            order("correlation id names another order", valid, id: "\(tag)-48", correlation: b, reason: "correlation-mismatch"),
            HostileMessage(name: "OrderPlaced for A naming B", exchange: "domain.events", routingKey: "order.placed", queue: orders,
                           body: json(["order_id": a]), properties: properties(type: OrderPlaced.typeName, id: "\(tag)-49", correlation: b),
                           expectedReason: "correlation-mismatch"),
            HostileMessage(name: "a trip request naming another trip", exchange: "domain.events", routingKey: "booking.requested", queue: bookings,
                           body: tripRequest(trip: "\(tag)-trip-a"),
                           properties: properties(type: TravelCapacityRequest.tripRequested, id: "\(tag)-50", correlation: "\(tag)-trip-b"),
                           expectedReason: "correlation-mismatch"),
            HostileMessage(name: "a timeout of A naming B", exchange: "", routingKey: timeouts, queue: timeouts, body: timeoutBody(order: a),
                           properties: properties(type: TimeoutMessageHandler.eventType, id: "\(tag)-51", correlation: b), expectedReason: "correlation-mismatch"),
            HostileMessage(name: "an unknown type on the bookings queue", exchange: "domain.events", routingKey: "booking.requested", queue: bookings,
                           body: valid, properties: properties(type: "PaymentConfirmed", id: "\(tag)-52"), expectedReason: "unknown-type"),
            HostileMessage(name: "an unknown type on the timeouts queue", exchange: "", routingKey: timeouts, queue: timeouts,
                           body: valid, properties: properties(type: "PaymentConfirmed", id: "\(tag)-53"), expectedReason: "unknown-type"),
            HostileMessage(name: "a timeout that is no timeout", exchange: "", routingKey: timeouts, queue: timeouts,
                           body: json(["process_id": 5]), properties: properties(type: TimeoutMessageHandler.eventType, id: "\(tag)-54"),
                           expectedReason: "invalid-payload"),
            HostileMessage(name: "a trip request that is no trip", exchange: "domain.events", routingKey: "booking.requested", queue: bookings,
                           body: json(["trip_id": ["x"]]), properties: properties(type: TravelCapacityRequest.tripRequested, id: "\(tag)-55"),
                           expectedReason: "invalid-payload"),
            settlement("a settlement no mapping matches", json(["order_id": a, "settlement_id": "s"]), routingKey: "settlement.refunded", reason: "missing-type"),
            settlement("a settlement without order_id", json(["settlement_id": "\(tag)-s1"]), reason: "missing-correlation-id"),
            settlement("a settlement with an object id", json(["order_id": a, "settlement_id": ["x": 1]]), reason: "missing-message-id"),
            settlement("a settlement with order_id a boolean", json(["order_id": true, "settlement_id": "\(tag)-s2"]), reason: "missing-correlation-id"),
            settlement("a settlement with order_id 1e400", Data(#"{"order_id":1e400,"settlement_id":"s3"}"#.utf8), reason: "malformed-body"),
            settlement("a settlement with order_id 7.0", Data(#"{"order_id":7.0,"settlement_id":"s3"}"#.utf8), reason: "missing-correlation-id"),
            settlement("a decline without a reason", json(["order_id": a, "settlement_id": "\(tag)-s4"]), routingKey: "settlement.declined", reason: "invalid-payload"),
            settlement("a decline whose reason is 1e400", Data(#"{"order_id":"\#(a)","settlement_id":"\#(tag)-s5","decline_reason":1e400}"#.utf8),
                       routingKey: "settlement.declined", reason: "malformed-body"),
        ]
        // Harmless: a customer notification for an order nobody placed is ignored (acknowledged, no effect).
        cases.append(HostileMessage(name: "a notification for no order", exchange: "domain.events", routingKey: "order.notified", queue: orders,
                                    body: json(["order_id": "\(tag)-nobody", "channel": "email"]),
                                    properties: properties(type: "CustomerNotified", id: "\(tag)-56", correlation: "\(tag)-nobody"), expectedReason: nil))
        return cases
    }

    // MARK: - Seeded mutations

    static var replacements: [Any] { [
        NSNull(), true, false, 0, -1, Int64.max, 1.5e300, "", String(repeating: "ü", count: 300), [Any](), [String: Any](),
        ["nested": ["deeper": [1, 2, 3]]], "\u{0}", "a\u{7}b",
    ] }

    static let hostileHeaderValues: [AMQPFieldValue] = [
        "x", "", .int64(-1), .int64(.max), .uint64(.max), .double(.nan), .double(-.infinity), .bool(true), .bytes([0xFF, 0x00]),
        .timestamp(Date(timeIntervalSince1970: 0)), .table(["x-death": .array([])]), .array([.string("a"), .void]), .void,
        .decimal(scale: 2, value: 12345), .int32(3), .int64(0),
    ]

    static let headerNames = [
        Envelope.Header.attempt, Envelope.Header.dueAt, Envelope.Header.causationID, Envelope.Header.traceparent,
        Envelope.Header.streamID, Envelope.Header.streamVersion, Envelope.Header.globalPosition, Envelope.Header.error,
        "x-death", "x-first-death-queue", "x-kind", "x-delivery-count",
    ]

    static let typeNames = ["OrderPlaced", "PaymentConfirmed", "ShipmentDelivered", "CustomerNotified", "ProcessTimeout",
                            TravelCapacityRequest.tripRequested, "", "Unknown", String(repeating: "T", count: 255), "Order Placed\u{1}"]

    /// `count` mutations of valid messages of every routed queue, from `seed`.
    static func mutations(seed: UInt64, count: Int) -> [HostileMessage] {
        var random = SplitMix64(seed: seed)
        let templates: [HostileMessage] = [
            order("template", json(["order_id": "m-order", "payment_id": "m-pay"]), id: "m", correlation: "m-order", reason: nil),
            orderPlaced("m-order", id: "m"),
            settlement("template", json(["order_id": "m-order", "settlement_id": "m-s", "amount": 12.5])),
            settlement("template", json(["order_id": "m-order", "settlement_id": "m-s", "decline_reason": "card"]), routingKey: "settlement.declined"),
            HostileMessage(name: "template", exchange: "domain.events", routingKey: "booking.requested", queue: bookings, body: tripRequest(trip: "m-trip"),
                           properties: properties(type: TravelCapacityRequest.tripRequested, id: "m", correlation: "m-trip"), expectedReason: nil),
            HostileMessage(name: "template", exchange: "", routingKey: timeouts, queue: timeouts, body: timeoutBody(order: "m-order"),
                           properties: properties(type: TimeoutMessageHandler.eventType, id: "m"), expectedReason: nil),
        ]
        var result: [HostileMessage] = []
        result.reserveCapacity(count)
        for index in 0..<count {
            var message = templates[random.below(templates.count)]
            message.properties.messageID = message.properties.messageID.map { "\($0)-\(seed)-\(index)" }
            let operation = random.below(12)
            message.name = "seed \(seed) case \(index) (operation \(operation))"
            message.body = mutate(message.body, operation: operation, random: &random)
            if random.below(3) == 0 { mutateProperties(&message.properties, random: &random) }
            result.append(message)
        }
        return result
    }

    static func mutate(_ body: Data, operation: Int, random: inout SplitMix64) -> Data {
        var bytes = [UInt8](body)
        func position() -> Int { bytes.isEmpty ? 0 : random.below(bytes.count) }
        switch operation {
        case 0: // flip bits of a few bytes
            for _ in 0..<(1 + random.below(4)) where !bytes.isEmpty { bytes[position()] ^= UInt8(truncatingIfNeeded: random.next() | 1) }
        case 1: // truncate
            bytes = Array(bytes.prefix(position()))
        case 2: // insert hostile bytes
            let hostile: [UInt8] = [0x00, 0xFF, 0xC0, 0x80, 0xED, 0xA0, 0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x2C, 0x3A, 0x0A]
            let inserted = (0..<(1 + random.below(8))).map { _ in hostile[random.below(hostile.count)] }
            bytes.insert(contentsOf: inserted, at: position())
        case 3: // delete a range
            let start = position(), length = Int(random.below(16))
            bytes.removeSubrange(start..<min(bytes.count, start + length))
        case 4: // duplicate a slice
            let start = position(), length = Int(random.below(64))
            let slice = Array(bytes[start..<min(bytes.count, start + length)])
            bytes.insert(contentsOf: slice, at: position())
        case 5, 6: // a value of the wrong type
            guard var object = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any], !object.isEmpty else { break }
            let key = object.keys.sorted()[random.below(object.count)]
            object[key] = replacements[random.below(replacements.count)]
            if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) { bytes = [UInt8](data) }
        case 7: // a field removed
            guard var object = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any], !object.isEmpty else { break }
            object.removeValue(forKey: object.keys.sorted()[random.below(object.count)])
            if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) { bytes = [UInt8](data) }
        case 8: // wrapped in nesting, from shallow to far too deep
            let depth = [1, 8, 63, 64, 65, 500, 20_000][Int(random.below(7))]
            bytes = [UInt8](String(repeating: #"{"a":"#, count: depth).utf8) + bytes + [UInt8](repeating: 0x7D, count: depth)
        case 9: // a long string spliced in as a value
            let length = [1_000, 100_000, 600_000][Int(random.below(3))]
            guard var object = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any], !object.isEmpty else { break }
            object[object.keys.sorted()[random.below(object.count)]] = String(repeating: "\u{1F600}", count: length / 4)
            if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) { bytes = [UInt8](data) }
        case 10: // random bytes
            bytes = (0..<random.below(64)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        default: // unchanged body (only the properties may change)
            break
        }
        return Data(bytes)
    }

    static func mutateProperties(_ properties: inout AMQPProperties, random: inout SplitMix64) {
        switch random.below(6) {
        case 0: properties.type = typeNames[random.below(typeNames.count)]
        case 1: properties.messageID = random.below(2) == 0 ? nil : "id\u{0}\(random.next())"
        case 2: properties.correlationID = ["other-order", "", "m-order\u{1B}[31m", String(repeating: "c", count: 255)][Int(random.below(4))]
        case 3: properties.contentType = ["text/plain", "", "application/json; charset=utf-8", "application/vnd.x+json", "APPLICATION/JSON"][Int(random.below(5))]
        default:
            var headers = properties.headers ?? [:]
            for _ in 0..<(1 + random.below(3)) {
                headers[headerNames[random.below(headerNames.count)]] =
                    hostileHeaderValues[random.below(hostileHeaderValues.count)]
            }
            properties.headers = headers
        }
    }
}
