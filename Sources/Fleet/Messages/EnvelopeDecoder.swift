import AMQP
import Foundation

/// Why a message cannot be processed: it goes to the dead-letter exchange at once with this reason.
public struct EnvelopeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The reason, as written to the `x-fleet-error` header.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The body is not a JSON object (or not UTF-8, or nested too deeply).
        public static let malformedBody = Code("malformed-body")
        /// The body is larger than the configured limit.
        public static let bodyTooLarge = Code("body-too-large")
        /// The content type is not JSON.
        public static let unsupportedContentType = Code("unsupported-content-type")
        /// Neither a `type` property nor a foreign mapping says what the message is.
        public static let missingEventType = Code("missing-type")
        /// The type is not one the queue's handler knows.
        public static let unknownEventType = Code("unknown-type")
        /// No message id: neither the property nor the mapping's pointer gives one.
        public static let missingMessageID = Code("missing-message-id")
        /// No correlation id where the mapping requires one.
        public static let missingCorrelationID = Code("missing-correlation-id")
        /// The body does not hold what its type requires (a field missing, a wrong type, a value out of range).
        public static let invalidPayload = Code("invalid-payload")
        /// Transient failures went on past the retry policy's last attempt.
        public static let retriesExhausted = Code("retries-exhausted")
        /// A property or header the fleet reads has the wrong type or an impossible value: an `x-fleet-attempt`
        /// that is not a small non-negative integer, an `x-fleet-due-at` that is not an integer or lies beyond
        /// the decoder's horizon, an id with a control character.
        public static let invalidHeader = Code("invalid-header")
        /// The message names one process in its correlation id and another in its payload.
        public static let correlationMismatch = Code("correlation-mismatch")
    }

    /// The reason.
    public var code: Code
    /// What exactly is wrong, for the `x-fleet-error-detail` header.
    public var detail: String

    /// An error.
    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "\(code): \(detail)" }
}

/// Turns deliveries of one queue into envelopes, following the queue's route in `topology.json`.
///
/// Messages with the fleet's conventions carry `type` and `message_id` properties. Messages from a foreign
/// bus are matched by routing key or header to a mapping that gives their type and says where their ids are
/// in the body. Whatever cannot be read is refused with an ``EnvelopeError`` naming the reason; nothing here
/// crashes on hostile input.
public struct EnvelopeDecoder: Sendable {
    /// The queue's route.
    public var route: Route
    /// Bodies larger than this are refused.
    public var maximumBodyBytes: Int
    /// JSON deeper than this is refused (protects the parser's stack).
    public var maximumDepth: Int
    /// An `x-fleet-due-at` further ahead than this is refused: no timeout or retry of the fleet waits that long,
    /// and such a message would otherwise travel the delay levels for ever (a due time in microseconds, say).
    public var maximumDelay: TimeInterval

    /// A decoder for `route`.
    public init(route: Route, maximumBodyBytes: Int = 1 << 20, maximumDepth: Int = 64, maximumDelay: TimeInterval = 10 * 366 * 86_400) {
        self.route = route
        self.maximumBodyBytes = maximumBodyBytes
        self.maximumDepth = maximumDepth
        self.maximumDelay = maximumDelay
    }

    /// Decodes one message received at `now`.
    ///
    /// - Throws: ``EnvelopeError`` with the reason the message cannot be processed. The fleet's own headers are
    ///   checked strictly (a wrongly typed or impossible value is ``EnvelopeError/Code/invalidHeader``); headers
    ///   it does not read are left alone.
    public func decode(body: Data, properties: AMQPProperties, routingKey: String, queue: String, now: Date = Date()) throws(EnvelopeError) -> Envelope {
        guard body.count <= maximumBodyBytes else {
            throw EnvelopeError(.bodyTooLarge, "\(body.count) bytes, the limit is \(maximumBodyBytes)")
        }
        if let contentType = properties.contentType, !contentType.isEmpty,
           !contentType.lowercased().hasPrefix("application/json"), !contentType.lowercased().hasSuffix("+json") {
            throw EnvelopeError(.unsupportedContentType, "content type \(contentType.prefix(100)) is not JSON")
        }
        let document = try parse(body)
        let headers = FleetHeaders(properties.headers ?? [:])
        let attempt = try headers.integer(Envelope.Header.attempt, in: 0...Int64(Int32.max))
        let dueAt = try headers.integer(Envelope.Header.dueAt, in: Int64.min...Int64.max).map { Date(timeIntervalSince1970: Double($0) / 1000) }
        if let dueAt, dueAt.timeIntervalSince(now) > maximumDelay {
            throw EnvelopeError(.invalidHeader, "\(Envelope.Header.dueAt) is \(Int(dueAt.timeIntervalSince(now) / 86_400)) days ahead, more than the \(Int(maximumDelay / 86_400)) days any delay may last")
        }
        var envelope = Envelope(
            messageID: properties.messageID ?? "", eventType: properties.type ?? "", correlationID: properties.correlationID,
            causationID: try headers.string(Envelope.Header.causationID), traceparent: try headers.string(Envelope.Header.traceparent),
            body: body, timestamp: properties.timestamp, queue: queue, routingKey: routingKey,
            attempt: Int(attempt ?? 0),
            streamID: try headers.string(Envelope.Header.streamID),
            streamVersion: try headers.integer(Envelope.Header.streamVersion, in: 0...Int64.max),
            globalPosition: try headers.integer(Envelope.Header.globalPosition, in: 0...Int64.max),
            dueAt: dueAt)

        if let mapping = route.foreign.first(where: { $0.matches(routingKey: routingKey, headers: properties.headers) }) {
            envelope.eventType = mapping.eventType
            guard let pointer = JSONPointer(mapping.correlationPointer), let correlation = pointer.stringValue(in: document),
                  !correlation.isEmpty else {
                throw EnvelopeError(.missingCorrelationID, "the body has no string or integer at \(mapping.correlationPointer)")
            }
            envelope.correlationID = correlation
            if let idPointer = mapping.messageIDPointer, let pointer = JSONPointer(idPointer) {
                guard let id = pointer.stringValue(in: document), !id.isEmpty else {
                    throw EnvelopeError(.missingMessageID, "the body has no string or integer at \(idPointer)")
                }
                envelope.messageID = "\(mapping.eventType):\(id)"
            }
            if let fields = mapping.fields {
                var object: [String: Any] = [:]
                for (name, text) in fields {
                    guard let pointer = JSONPointer(text), let value = pointer.resolve(in: document) else {
                        throw EnvelopeError(.invalidPayload, "the body has nothing at \(text) for field \(name)")
                    }
                    object[name] = value
                }
                guard let body = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else {
                    throw EnvelopeError(.invalidPayload, "the mapped fields do not form a JSON object")
                }
                envelope.body = body
            }
        } else if !route.foreign.isEmpty && envelope.eventType.isEmpty {
            throw EnvelopeError(.missingEventType, "no foreign mapping of queue \(queue) matches routing key \(routingKey.prefix(200))")
        }
        guard !envelope.eventType.isEmpty else {
            throw EnvelopeError(.missingEventType, "the message has no type property")
        }
        guard envelope.eventType.utf8.count <= 255 else {
            throw EnvelopeError(.unknownEventType, "the type name is longer than 255 bytes")
        }
        guard !envelope.messageID.isEmpty else {
            throw EnvelopeError(.missingMessageID, "the message has no message_id property")
        }
        guard envelope.messageID.utf8.count <= 255 else {
            throw EnvelopeError(.missingMessageID, "the message id is longer than 255 bytes")
        }
        for (name, value) in [("type", envelope.eventType), ("message id", envelope.messageID), ("correlation id", envelope.correlationID ?? "")]
        where value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw EnvelopeError(.invalidHeader, "the \(name) \(String(value.prefix(100)).debugDescription) contains a control character")
        }
        return envelope
    }

    private func parse(_ body: Data) throws(EnvelopeError) -> Any {
        guard String(validating: body, as: UTF8.self) != nil else {
            throw EnvelopeError(.malformedBody, "the body is not UTF-8")
        }
        guard JSONDepth.maximum(of: body) <= maximumDepth else {
            throw EnvelopeError(.malformedBody, "JSON nested deeper than \(maximumDepth) levels")
        }
        let document: Any
        do {
            document = try JSONSerialization.jsonObject(with: body, options: [])
        } catch {
            throw EnvelopeError(.malformedBody, "not JSON: \(String(describing: error).prefix(200))")
        }
        guard document is [String: Any] else {
            throw EnvelopeError(.malformedBody, "the body is JSON but not an object")
        }
        return document
    }
}

/// The headers the fleet reads, checked for type: a header that is absent is nil, one of the wrong type is refused.
private struct FleetHeaders {
    let table: AMQPTable

    init(_ table: AMQPTable) { self.table = table }

    func string(_ name: String) throws(EnvelopeError) -> String? {
        guard let value = table[name] else { return nil }
        guard let text = value.stringValue else { throw EnvelopeError(.invalidHeader, "\(name) must be a UTF-8 string, not \(Self.describe(value))") }
        return text
    }

    func integer(_ name: String, in range: ClosedRange<Int64>) throws(EnvelopeError) -> Int64? {
        guard let value = table[name] else { return nil }
        guard let number = value.intValue else { throw EnvelopeError(.invalidHeader, "\(name) must be an integer, not \(Self.describe(value))") }
        guard range.contains(number) else { throw EnvelopeError(.invalidHeader, "\(name) is \(number), outside \(range.lowerBound)...\(range.upperBound)") }
        return number
    }

    /// The kind of a header value, without its contents (a table may be large or nested deeply).
    private static func describe(_ value: AMQPFieldValue) -> String {
        switch value {
        case .bool: "a boolean"
        case .int8, .uint8, .int16, .uint16, .int32, .uint32, .int64, .uint64: "an integer out of range"
        case .float, .double, .decimal: "a number with a fraction"
        case .string: "a string"
        case .bytes: "a byte array"
        case .array: "an array"
        case .timestamp: "a timestamp"
        case .table: "a table"
        case .void: "void"
        }
    }
}

/// Measures JSON nesting without parsing, so that hostile depth never reaches a recursive parser.
enum JSONDepth {
    static func maximum(of data: Data) -> Int {
        var depth = 0, deepest = 0
        var inString = false, escaped = false
        for byte in data {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                deepest = max(deepest, depth)
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            default: break
            }
        }
        return deepest
    }
}
