import AMQP
import Foundation

/// A message in the dead-letter queue, with why and where it failed as the worker (or the broker) recorded it.
public struct DeadLetter: Sendable, Hashable, Codable {
    /// The message id (the event id for the fleet's own messages); empty when the message had none.
    public var messageID: String
    /// The event type (`type` property).
    public var eventType: String?
    /// Why it was dead-lettered (`x-fleet-error`, or the broker's `x-death` reason such as `delivery_limit`).
    public var reason: String
    /// The worker's explanation, if any.
    public var detail: String?
    /// The worker that dead-lettered it.
    public var worker: String?
    /// When it was dead-lettered.
    public var failedAt: String?
    /// The queue it failed on, where `requeue` sends it by default.
    public var sourceQueue: String?
    /// The routing key it had on its source queue.
    public var sourceRoutingKey: String?
    /// The correlation id.
    public var correlationID: String?
    /// The body's size in bytes.
    public var bodyBytes: Int
    /// The body as text (UTF-8, or a note for a binary body).
    public var body: String

    /// Reads the dead-letter headers of a message: the fleet's `x-fleet-*` first, the broker's `x-death` second.
    public init(properties: AMQPProperties, body: Data) {
        let headers = properties.headers ?? [:]
        let death = headers["x-death"]?.arrayValue?.first?.tableValue
        messageID = properties.messageID ?? ""
        eventType = properties.type
        reason = headers[Envelope.Header.error]?.stringValue ?? death?["reason"]?.stringValue ?? "unknown"
        detail = headers[Envelope.Header.errorDetail]?.stringValue
        worker = headers[Envelope.Header.worker]?.stringValue
        failedAt = headers[Envelope.Header.failedAt]?.stringValue
        sourceQueue = headers[Envelope.Header.sourceQueue]?.stringValue
            ?? headers["x-first-death-queue"]?.stringValue ?? death?["queue"]?.stringValue
        sourceRoutingKey = headers[Envelope.Header.sourceRoutingKey]?.stringValue
            ?? death?["routing-keys"]?.arrayValue?.first?.stringValue
        correlationID = properties.correlationID
        bodyBytes = body.count
        self.body = String(data: body, encoding: .utf8) ?? "<\(body.count) bytes of binary data>"
    }

    /// Headers that describe a failure rather than the message, removed when it is sent back to work:
    /// `x-death` and the broker's other death headers (RabbitMQ drops a message whose `x-death` already names
    /// the queue it is dead-lettered to again on some paths), the fleet's `x-fleet-*` failure headers, and
    /// its retry count, so the message starts afresh.
    public static let failureHeaders: Set<String> = [
        "x-death", "x-first-death-queue", "x-first-death-reason", "x-first-death-exchange", "x-last-death-queue",
        "x-last-death-reason", "x-last-death-exchange", "x-delivery-count",
        Envelope.Header.error, Envelope.Header.errorDetail, Envelope.Header.worker, Envelope.Header.failedAt,
        Envelope.Header.sourceQueue, Envelope.Header.sourceRoutingKey, Envelope.Header.attempt,
    ]

    /// The properties to send the message back with: the original ones without ``failureHeaders``.
    public static func requeueProperties(_ properties: AMQPProperties) -> AMQPProperties {
        var cleaned = properties
        let headers = (properties.headers ?? [:]).filter { !failureHeaders.contains($0.key) }
        cleaned.headers = headers.isEmpty ? nil : headers
        return cleaned
    }
}

/// Which dead letters a `requeue` takes: `type=...,reason=...,queue=...`, every condition must hold.
public struct DeadLetterFilter: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Only this event type.
    public var eventType: String?
    /// Only this reason.
    public var reason: String?
    /// Only dead letters from this source queue.
    public var sourceQueue: String?

    /// A filter; with no condition it takes everything.
    public init(eventType: String? = nil, reason: String? = nil, sourceQueue: String? = nil) {
        self.eventType = eventType
        self.reason = reason
        self.sourceQueue = sourceQueue
    }

    /// Parses `type=PaymentConfirmed,reason=retries-exhausted,queue=fleet.orders`.
    /// - Throws: ``OperationsError/Code/invalidArgument`` for an unknown key or a condition without `=`.
    public init(parsing text: String) throws(OperationsError) {
        self.init()
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            guard let equals = part.firstIndex(of: "="), equals != part.startIndex else {
                throw OperationsError(.invalidArgument, "filter condition \"\(part)\" is not KEY=VALUE (keys: type, reason, queue)")
            }
            let key = part[..<equals], value = String(part[part.index(after: equals)...])
            guard !value.isEmpty else { throw OperationsError(.invalidArgument, "filter condition \"\(part)\" has no value") }
            switch key {
            case "type": eventType = value
            case "reason": reason = value
            case "queue": sourceQueue = value
            default: throw OperationsError(.invalidArgument, "unknown filter key \"\(key)\" (keys: type, reason, queue)")
            }
        }
    }

    /// Whether `deadLetter` satisfies every condition.
    public func matches(_ deadLetter: DeadLetter) -> Bool {
        if let eventType, deadLetter.eventType != eventType { return false }
        if let reason, deadLetter.reason != reason { return false }
        if let sourceQueue, deadLetter.sourceQueue != sourceQueue { return false }
        return true
    }

    /// `type=...,reason=...,queue=...`, or `everything`.
    public var description: String {
        let parts = [eventType.map { "type=\($0)" }, reason.map { "reason=\($0)" }, sourceQueue.map { "queue=\($0)" }].compactMap { $0 }
        return parts.isEmpty ? "everything" : parts.joined(separator: ",")
    }
}
