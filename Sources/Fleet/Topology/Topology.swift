import AMQP
import Foundation

/// The broker topology of a fleet, read from `topology.json`.
///
/// The file is in RabbitMQ's definitions format (`exchanges`, `queues`, `bindings`, `policies`), so
/// `rabbitmqctl import_definitions topology.json` accepts it unchanged, plus a `fleet` section for what the
/// broker does not know: which handler consumes which queue, how messages from a foreign bus map to event
/// types, and the delay levels that carry timeouts and retries. ``declare(on:)`` makes the broker match the
/// file through AMQP alone.
public struct Topology: Sendable, Equatable {
    /// An exchange entry.
    public struct Exchange: Sendable, Equatable, Codable {
        public var name: String
        public var vhost: String
        public var type: String
        public var durable: Bool
        public var autoDelete: Bool
        public var `internal`: Bool
        public var arguments: AMQPTable

        enum CodingKeys: String, CodingKey {
            case name, vhost, type, durable, autoDelete = "auto_delete", `internal`, arguments
        }

        /// An exchange entry; durable by default.
        public init(name: String, vhost: String = "/", type: String, durable: Bool = true, autoDelete: Bool = false,
                    internal: Bool = false, arguments: AMQPTable = [:]) {
            self.name = name
            self.vhost = vhost
            self.type = type
            self.durable = durable
            self.autoDelete = autoDelete
            self.internal = `internal`
            self.arguments = arguments
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            vhost = try c.decodeIfPresent(String.self, forKey: .vhost) ?? "/"
            type = try c.decode(String.self, forKey: .type)
            durable = try c.decodeIfPresent(Bool.self, forKey: .durable) ?? true
            autoDelete = try c.decodeIfPresent(Bool.self, forKey: .autoDelete) ?? false
            self.internal = try c.decodeIfPresent(Bool.self, forKey: .internal) ?? false
            arguments = try c.decodeIfPresent(AMQPTable.self, forKey: .arguments) ?? [:]
        }

        var declaration: ExchangeDeclaration {
            ExchangeDeclaration(name: name, type: type, durable: durable, autoDelete: autoDelete, internal: self.internal, arguments: arguments)
        }
    }

    /// A queue entry.
    public struct Queue: Sendable, Equatable, Codable {
        public var name: String
        public var vhost: String
        public var durable: Bool
        public var autoDelete: Bool
        public var arguments: AMQPTable

        enum CodingKeys: String, CodingKey {
            case name, vhost, durable, autoDelete = "auto_delete", arguments
        }

        /// A queue entry; durable by default.
        public init(name: String, vhost: String = "/", durable: Bool = true, autoDelete: Bool = false, arguments: AMQPTable = [:]) {
            self.name = name
            self.vhost = vhost
            self.durable = durable
            self.autoDelete = autoDelete
            self.arguments = arguments
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            vhost = try c.decodeIfPresent(String.self, forKey: .vhost) ?? "/"
            durable = try c.decodeIfPresent(Bool.self, forKey: .durable) ?? true
            autoDelete = try c.decodeIfPresent(Bool.self, forKey: .autoDelete) ?? false
            arguments = try c.decodeIfPresent(AMQPTable.self, forKey: .arguments) ?? [:]
        }

        /// `classic`, `quorum` or `stream`.
        public var queueType: String { arguments["x-queue-type"]?.stringValue ?? "classic" }

        var declaration: QueueDeclaration {
            QueueDeclaration(name: name, durable: durable, exclusive: false, autoDelete: autoDelete, arguments: arguments)
        }
    }

    /// A binding entry.
    public struct Binding: Sendable, Equatable, Codable {
        public var source: String
        public var vhost: String
        public var destination: String
        public var destinationType: BindingDeclaration.Destination
        public var routingKey: String
        public var arguments: AMQPTable

        enum CodingKeys: String, CodingKey {
            case source, vhost, destination, destinationType = "destination_type", routingKey = "routing_key", arguments
        }

        /// A binding entry; to a queue by default.
        public init(source: String, vhost: String = "/", destination: String, destinationType: BindingDeclaration.Destination = .queue,
                    routingKey: String, arguments: AMQPTable = [:]) {
            self.source = source
            self.vhost = vhost
            self.destination = destination
            self.destinationType = destinationType
            self.routingKey = routingKey
            self.arguments = arguments
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            source = try c.decode(String.self, forKey: .source)
            vhost = try c.decodeIfPresent(String.self, forKey: .vhost) ?? "/"
            destination = try c.decode(String.self, forKey: .destination)
            let type = try c.decodeIfPresent(String.self, forKey: .destinationType) ?? "queue"
            guard let destinationType = BindingDeclaration.Destination(rawValue: type) else {
                throw DecodingError.dataCorruptedError(forKey: .destinationType, in: c, debugDescription: "destination_type must be queue or exchange, not \(type)")
            }
            self.destinationType = destinationType
            routingKey = try c.decodeIfPresent(String.self, forKey: .routingKey) ?? ""
            arguments = try c.decodeIfPresent(AMQPTable.self, forKey: .arguments) ?? [:]
        }

        /// How the entry is named in errors.
        public var label: String { "binding \(source) -> \(destination) (\(routingKey))" }

        var declaration: BindingDeclaration {
            BindingDeclaration(source: source, destination: destination, destinationType: destinationType, routingKey: routingKey, arguments: arguments)
        }
    }

    /// A policy entry. Policies are applied by RabbitMQ's own tools; the fleet puts everything it relies on in
    /// queue arguments instead, so a policy here is refused by ``validate()``.
    public struct Policy: Sendable, Equatable, Codable {
        public var name: String
        public var vhost: String?
        public var pattern: String
        public var definition: AMQPTable
    }

    public var exchanges: [Exchange]
    public var queues: [Queue]
    public var bindings: [Binding]
    public var policies: [Policy]
    /// What only the fleet reads.
    public var fleet: FleetSection

    /// A topology from its parts.
    public init(exchanges: [Exchange], queues: [Queue], bindings: [Binding], policies: [Policy] = [], fleet: FleetSection) {
        self.exchanges = exchanges
        self.queues = queues
        self.bindings = bindings
        self.policies = policies
        self.fleet = fleet
    }

    /// The exchange named `name`, if the file declares it.
    public func exchange(named name: String) -> Exchange? { exchanges.first { $0.name == name } }

    /// The queue named `name`, if the file declares it.
    public func queue(named name: String) -> Queue? { queues.first { $0.name == name } }
}
