import AMQP
import Foundation

/// A message as the fleet sees it: an event with its ids, whatever bus it came from.
public struct Envelope: Sendable, Equatable {
    /// The message id: the event id for the fleet's own messages, an id from the body for foreign ones.
    /// Together with the consumer it is the idempotency key of the message's effect.
    public var messageID: String
    /// The event type name (`PaymentConfirmed`).
    public var eventType: String
    /// The business id the event is about (an order id), when known.
    public var correlationID: String?
    /// The id of the message that caused this one.
    public var causationID: String?
    /// W3C trace context.
    public var traceparent: String?
    /// The JSON body.
    public var body: Data
    /// When the message was published, if it says.
    public var timestamp: Date?
    /// The queue it was consumed from.
    public var queue: String
    /// The routing key it was published with.
    public var routingKey: String
    /// How many times the fleet has tried it before (0 on the first delivery through the fleet's retries).
    public var attempt: Int
    /// For events re-published from the store: where they are stored.
    public var streamID: String?
    /// For events re-published from the store: their version in the stream.
    public var streamVersion: Int64?
    /// For events re-published from the store: their global position.
    public var globalPosition: Int64?
    /// For a delayed message: when it is due. A worker that receives it earlier delays it again.
    public var dueAt: Date?

    /// An envelope.
    public init(messageID: String, eventType: String, correlationID: String? = nil, causationID: String? = nil,
                traceparent: String? = nil, body: Data, timestamp: Date? = nil, queue: String = "", routingKey: String = "",
                attempt: Int = 0, streamID: String? = nil, streamVersion: Int64? = nil, globalPosition: Int64? = nil,
                dueAt: Date? = nil) {
        self.messageID = messageID
        self.eventType = eventType
        self.correlationID = correlationID
        self.causationID = causationID
        self.traceparent = traceparent
        self.body = body
        self.timestamp = timestamp
        self.queue = queue
        self.routingKey = routingKey
        self.attempt = attempt
        self.streamID = streamID
        self.streamVersion = streamVersion
        self.globalPosition = globalPosition
        self.dueAt = dueAt
    }

    /// The AMQP properties the fleet publishes an envelope with (DESIGN section 4): persistent JSON,
    /// `message_id`, `type`, `correlation_id`, `timestamp`, and the causation, trace and store headers.
    public var properties: AMQPProperties {
        var properties = AMQPProperties.persistent
        properties.contentType = "application/json"
        properties.messageID = messageID
        properties.type = eventType
        properties.correlationID = correlationID
        properties.timestamp = timestamp
        var headers: AMQPTable = [:]
        if let causationID { headers[Header.causationID] = .string(causationID) }
        if let traceparent { headers[Header.traceparent] = .string(traceparent) }
        if let streamID { headers[Header.streamID] = .string(streamID) }
        if let streamVersion { headers[Header.streamVersion] = .int64(streamVersion) }
        if let globalPosition { headers[Header.globalPosition] = .int64(globalPosition) }
        if attempt > 0 { headers[Header.attempt] = .int32(Int32(clamping: attempt)) }
        if let dueAt { headers[Header.dueAt] = .int64(Int64((dueAt.timeIntervalSince1970 * 1000).rounded(.up))) }
        properties.headers = headers.isEmpty ? nil : headers
        return properties
    }

    /// Header names the fleet reads and writes.
    public enum Header {
        public static let causationID = "x-causation-id"
        public static let traceparent = "traceparent"
        public static let streamID = "x-stream-id"
        public static let streamVersion = "x-stream-version"
        public static let globalPosition = "x-global-position"
        /// When a delayed message is due, in milliseconds since 1970.
        public static let dueAt = "x-fleet-due-at"
        /// When a delayed message was sent to the delay levels, in milliseconds since 1970 (from which workers
        /// learn what a hop through the levels costs).
        public static let delayedAt = "x-fleet-delayed-at"
        /// How many times the fleet has retried the message.
        public static let attempt = "x-fleet-attempt"
        /// Why the message was dead-lettered (`malformed-body`, `unknown-type`, `retries-exhausted`, ...).
        public static let error = "x-fleet-error"
        /// A human-readable explanation of the error.
        public static let errorDetail = "x-fleet-error-detail"
        /// The worker that dead-lettered the message.
        public static let worker = "x-fleet-worker"
        /// When it was dead-lettered (ISO 8601).
        public static let failedAt = "x-fleet-failed-at"
        /// The queue the message was consumed from, where `fleet dlq requeue` sends it back.
        public static let sourceQueue = "x-fleet-source-queue"
        /// The routing key it had there.
        public static let sourceRoutingKey = "x-fleet-source-routing-key"
    }
}
