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

    /// A decoder for `route`.
    public init(route: Route, maximumBodyBytes: Int = 1 << 20, maximumDepth: Int = 64) {
        self.route = route
        self.maximumBodyBytes = maximumBodyBytes
        self.maximumDepth = maximumDepth
    }

    /// Decodes one message.
    public func decode(body: Data, properties: AMQPProperties, routingKey: String, queue: String) throws(EnvelopeError) -> Envelope {
        guard body.count <= maximumBodyBytes else {
            throw EnvelopeError(.bodyTooLarge, "\(body.count) bytes, the limit is \(maximumBodyBytes)")
        }
        if let contentType = properties.contentType, !contentType.isEmpty,
           !contentType.lowercased().hasPrefix("application/json"), !contentType.lowercased().hasSuffix("+json") {
            throw EnvelopeError(.unsupportedContentType, "content type \(contentType.prefix(100)) is not JSON")
        }
        let document = try parse(body)
        let headers = properties.headers ?? [:]
        var envelope = Envelope(
            messageID: properties.messageID ?? "", eventType: properties.type ?? "", correlationID: properties.correlationID,
            causationID: headers[Envelope.Header.causationID]?.stringValue, traceparent: headers[Envelope.Header.traceparent]?.stringValue,
            body: body, timestamp: properties.timestamp, queue: queue, routingKey: routingKey,
            attempt: Int(headers[Envelope.Header.attempt]?.intValue ?? 0),
            streamID: headers[Envelope.Header.streamID]?.stringValue, streamVersion: headers[Envelope.Header.streamVersion]?.intValue,
            globalPosition: headers[Envelope.Header.globalPosition]?.intValue,
            dueAt: headers[Envelope.Header.dueAt]?.intValue.map { Date(timeIntervalSince1970: Double($0) / 1000) })

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
