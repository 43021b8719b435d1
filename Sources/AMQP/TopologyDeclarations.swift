import Foundation

/// An exchange as declared on the broker.
public struct ExchangeDeclaration: Sendable, Hashable, Codable {
    /// The exchange's name.
    public var name: String
    /// `direct`, `fanout`, `topic`, `headers`, or a plugin's type such as `x-consistent-hash`.
    public var type: String
    /// Whether the exchange survives a broker restart.
    public var durable: Bool
    /// Whether the broker deletes it when its last binding goes.
    public var autoDelete: Bool
    /// Whether only other exchanges may publish to it.
    public var `internal`: Bool
    /// Extra arguments (`alternate-exchange`, ...).
    public var arguments: AMQPTable

    /// An exchange declaration; durable topic exchange by default.
    public init(name: String, type: String = "topic", durable: Bool = true, autoDelete: Bool = false,
                internal: Bool = false, arguments: AMQPTable = [:]) {
        self.name = name
        self.type = type
        self.durable = durable
        self.autoDelete = autoDelete
        self.internal = `internal`
        self.arguments = arguments
    }
}

/// A queue as declared on the broker.
public struct QueueDeclaration: Sendable, Hashable, Codable {
    /// The queue's name; empty asks the broker to name it (such a queue is not re-declared on recovery).
    public var name: String
    /// Whether the queue survives a broker restart (required for quorum and stream queues).
    public var durable: Bool
    /// Whether only this connection may use it; deleted when the connection closes.
    public var exclusive: Bool
    /// Whether the broker deletes it when its last consumer goes.
    public var autoDelete: Bool
    /// Arguments: `x-queue-type`, `x-dead-letter-exchange`, `x-message-ttl`, `x-delivery-limit`, ...
    public var arguments: AMQPTable

    /// A queue declaration; durable by default.
    public init(name: String, durable: Bool = true, exclusive: Bool = false, autoDelete: Bool = false,
                arguments: AMQPTable = [:]) {
        self.name = name
        self.durable = durable
        self.exclusive = exclusive
        self.autoDelete = autoDelete
        self.arguments = arguments
    }
}

/// A binding from an exchange to a queue or to another exchange.
public struct BindingDeclaration: Sendable, Hashable, Codable {
    /// What the binding leads to.
    public enum Destination: String, Sendable, Hashable, Codable {
        case queue
        case exchange
    }

    /// The exchange messages come from.
    public var source: String
    /// The queue or exchange they go to.
    public var destination: String
    /// Whether `destination` is a queue or an exchange.
    public var destinationType: Destination
    /// The routing key (a pattern for topic exchanges, a weight for consistent-hash exchanges).
    public var routingKey: String
    /// Binding arguments (headers exchanges match on them).
    public var arguments: AMQPTable

    /// A binding declaration; to a queue by default.
    public init(source: String, destination: String, destinationType: Destination = .queue, routingKey: String = "",
                arguments: AMQPTable = [:]) {
        self.source = source
        self.destination = destination
        self.destinationType = destinationType
        self.routingKey = routingKey
        self.arguments = arguments
    }
}

/// What the broker reports of a queue after a declaration.
public struct QueueState: Sendable, Hashable {
    /// The queue's name (the broker's choice for a server-named queue).
    public var name: String
    /// Messages ready for delivery.
    public var messageCount: UInt32
    /// Active consumers.
    public var consumerCount: UInt32
}

extension AMQPFieldValue: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .void
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .int64(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([AMQPFieldValue].self) {
            self = .array(value)
        } else if let value = try? container.decode([String: AMQPFieldValue].self) {
            self = .table(value)
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a field value")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .bool(let v): try container.encode(v)
        case .int8, .uint8, .int16, .uint16, .int32, .uint32, .int64: try container.encode(intValue!)
        case .uint64(let v): try container.encode(v)
        case .float(let v): try container.encode(v)
        case .double(let v): try container.encode(v)
        case .decimal(let scale, let value):
            var decimal = Double(value)
            for _ in 0..<scale { decimal /= 10 }
            try container.encode(decimal)
        case .string(let v): try container.encode(v)
        case .bytes(let v): try container.encode(String(decoding: v, as: UTF8.self))
        case .array(let v): try container.encode(v)
        case .timestamp(let date): try container.encode(Int64(date.timeIntervalSince1970))
        case .table(let v): try container.encode(v)
        case .void: try container.encodeNil()
        }
    }
}
