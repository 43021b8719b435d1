import AMQP

/// The part of `topology.json` only the fleet reads (RabbitMQ ignores it on import).
public struct FleetSection: Sendable, Equatable, Codable {
    /// The virtual host every entry lives in.
    public var virtualHost: String
    /// Where messages that cannot be processed go, with reason headers.
    public var deadLetterExchange: String
    /// The queue that keeps them for operators.
    public var deadLetterQueue: String
    /// Where committed process events are published for other services.
    public var processEventsExchange: String
    /// The queue timeout messages arrive in when due.
    public var timeoutsQueue: String
    /// The delay levels that carry timeouts and retries.
    public var delay: DelayLevels
    /// Which handler consumes which queue.
    public var routes: [Route]

    enum CodingKeys: String, CodingKey {
        case virtualHost = "virtual_host", deadLetterExchange = "dead_letter_exchange", deadLetterQueue = "dead_letter_queue"
        case processEventsExchange = "process_events_exchange", timeoutsQueue = "timeouts_queue", delay, routes
    }

    /// A fleet section from its parts.
    public init(virtualHost: String = "/", deadLetterExchange: String, deadLetterQueue: String, processEventsExchange: String,
                timeoutsQueue: String, delay: DelayLevels, routes: [Route]) {
        self.virtualHost = virtualHost
        self.deadLetterExchange = deadLetterExchange
        self.deadLetterQueue = deadLetterQueue
        self.processEventsExchange = processEventsExchange
        self.timeoutsQueue = timeoutsQueue
        self.delay = delay
        self.routes = routes
    }
}

/// A queue the fleet consumes and the handler its messages go to.
public struct Route: Sendable, Equatable, Codable {
    /// The queue.
    public var queue: String
    /// The handler's name, as registered with the worker (e.g. `order-fulfillment`).
    public var handler: String
    /// How messages without the fleet's conventions are read (no `type` property, ids in the body).
    public var foreign: [ForeignMapping]

    enum CodingKeys: String, CodingKey { case queue, handler, foreign }

    /// A route.
    public init(queue: String, handler: String, foreign: [ForeignMapping] = []) {
        self.queue = queue
        self.handler = handler
        self.foreign = foreign
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        queue = try c.decode(String.self, forKey: .queue)
        handler = try c.decode(String.self, forKey: .handler)
        foreign = try c.decodeIfPresent([ForeignMapping].self, forKey: .foreign) ?? []
    }
}

/// How a message from an existing bus maps to one of the fleet's event types.
///
/// A mapping matches on the routing key, a header, or both; the first mapping that matches wins. The body is
/// JSON; the correlation id (and optionally the message id) are read from it with JSON pointers.
public struct ForeignMapping: Sendable, Equatable, Codable {
    /// A header and the value it must have.
    public struct HeaderMatch: Sendable, Equatable, Codable {
        public var name: String
        public var value: String

        /// A header match.
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// The routing key a message must have, if any.
    public var routingKey: String?
    /// A header the message must carry, if any.
    public var header: HeaderMatch?
    /// The fleet's event type the message becomes.
    public var eventType: String
    /// JSON pointer to the correlation id in the body, e.g. `/order_id`.
    public var correlationPointer: String
    /// JSON pointer to a stable message id in the body, when the bus sets no `message_id`.
    public var messageIDPointer: String?
    /// When the foreign body's fields differ from the event's: each field of the event and the JSON pointer
    /// its value is read from. Without it the body is taken as it is.
    public var fields: [String: String]?

    enum CodingKeys: String, CodingKey {
        case routingKey = "routing_key", header, eventType = "event_type", correlationPointer = "correlation_pointer"
        case messageIDPointer = "message_id_pointer", fields
    }

    /// A mapping.
    public init(routingKey: String? = nil, header: HeaderMatch? = nil, eventType: String, correlationPointer: String,
                messageIDPointer: String? = nil, fields: [String: String]? = nil) {
        self.routingKey = routingKey
        self.header = header
        self.eventType = eventType
        self.correlationPointer = correlationPointer
        self.messageIDPointer = messageIDPointer
        self.fields = fields
    }

    /// Whether a message with this routing key and these headers matches.
    public func matches(routingKey: String, headers: AMQPTable?) -> Bool {
        if let expected = self.routingKey, expected != routingKey { return false }
        if let header {
            guard headers?[header.name]?.stringValue == header.value else { return false }
        }
        return true
    }
}
