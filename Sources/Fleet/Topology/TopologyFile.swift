import AMQP
import Foundation

extension Topology {
    private struct File: Codable {
        var exchanges: [Exchange]?
        var queues: [Queue]?
        var bindings: [Binding]?
        var policies: [Policy]?
        var fleet: FleetSection?
    }

    /// Reads and validates a topology file.
    ///
    /// - Throws: ``TopologyError`` naming the entry at fault: malformed JSON, a missing field, a binding to
    ///   an undeclared queue or exchange, an unknown queue or exchange type, a route to an undeclared queue,
    ///   delay levels that do not match their declared entities.
    public static func load(contentsOf url: URL) throws(TopologyError) -> Topology {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw TopologyError(entry: url.path, problem: "cannot be read (\(error.localizedDescription))")
        }
        return try decode(data, source: url.lastPathComponent)
    }

    /// JSON deeper than this is refused before it is parsed (a topology file needs about six levels).
    public static let maximumDepth = 64

    /// Decodes and validates topology JSON.
    public static func decode(_ data: Data, source: String = "topology") throws(TopologyError) -> Topology {
        guard String(validating: data, as: UTF8.self) != nil else {
            throw TopologyError(entry: source, problem: "malformed JSON: the file is not UTF-8")
        }
        let depth = JSONDepth.maximum(of: data)
        guard depth <= maximumDepth else {
            throw TopologyError(entry: source, problem: "malformed JSON: nested \(depth) levels deep, at most \(maximumDepth) are allowed")
        }
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: data)
        } catch let error as DecodingError {
            throw TopologyError(entry: source, problem: Self.explain(error))
        } catch {
            throw TopologyError(entry: source, problem: "\(error)")
        }
        guard let fleet = file.fleet else {
            throw TopologyError(entry: source, problem: "has no \"fleet\" section")
        }
        let topology = Topology(exchanges: file.exchanges ?? [], queues: file.queues ?? [], bindings: file.bindings ?? [],
                                policies: file.policies ?? [], fleet: fleet)
        try topology.validate()
        return topology
    }

    /// The topology as RabbitMQ definitions plus the fleet section, ready to write to a file.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(File(exchanges: exchanges, queues: queues, bindings: bindings, policies: policies, fleet: fleet))
    }

    /// The same topology with the delay levels' exchanges, queues and bindings present exactly as
    /// ``DelayLevels/entities(virtualHost:)`` makes them (added or replaced; nothing else changes).
    public func renderingDelayLevels() -> Topology {
        let delay = fleet.delay.entities(virtualHost: fleet.virtualHost)
        let exchangeNames = Set(delay.exchanges.map(\.name)), queueNames = Set(delay.queues.map(\.name))
        let isDelaySource = { (binding: Binding) in exchangeNames.contains(binding.source) }
        var copy = self
        copy.exchanges = exchanges.filter { !exchangeNames.contains($0.name) } + delay.exchanges
        copy.queues = queues.filter { !queueNames.contains($0.name) } + delay.queues
        copy.bindings = bindings.filter { !isDelaySource($0) } + delay.bindings
        return copy
    }

    private static let builtInExchanges: Set<String> = ["", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match", "amq.rabbitmq.trace"]
    private static let exchangeTypes: Set<String> = ["direct", "fanout", "topic", "headers", "x-consistent-hash"]
    private static let queueTypes: Set<String> = ["classic", "quorum", "stream"]

    /// Checks that the topology is consistent; throws on the first entry at fault.
    public func validate() throws(TopologyError) {
        var exchangeNames = Set<String>()
        for exchange in exchanges {
            let entry = "exchange \(exchange.name)"
            guard !exchange.name.isEmpty, !exchange.name.hasPrefix("amq.") else { throw TopologyError(entry: entry, problem: "the name is reserved") }
            guard exchangeNames.insert(exchange.name).inserted else { throw TopologyError(entry: entry, problem: "is declared twice") }
            guard Self.exchangeTypes.contains(exchange.type) else {
                throw TopologyError(entry: entry, problem: "unknown exchange type \(exchange.type) (known: \(Self.exchangeTypes.sorted().joined(separator: ", ")))")
            }
            guard exchange.vhost == fleet.virtualHost else { throw TopologyError(entry: entry, problem: "is in vhost \(exchange.vhost), the fleet uses \(fleet.virtualHost)") }
        }
        var queueNames = Set<String>()
        for queue in queues {
            let entry = "queue \(queue.name)"
            guard !queue.name.isEmpty, !queue.name.hasPrefix("amq.") else { throw TopologyError(entry: entry, problem: "the name is empty or reserved") }
            guard queueNames.insert(queue.name).inserted else { throw TopologyError(entry: entry, problem: "is declared twice") }
            let typeValue = queue.arguments["x-queue-type"] ?? .string("classic")
            guard let type = typeValue.stringValue, Self.queueTypes.contains(type) else {
                throw TopologyError(entry: entry, problem: "unknown queue type \(queue.arguments["x-queue-type"].map { "\($0)" } ?? "") (known: classic, quorum, stream)")
            }
            if type != "classic" && (!queue.durable || queue.autoDelete) {
                throw TopologyError(entry: entry, problem: "a \(type) queue must be durable and not auto-delete")
            }
            guard queue.vhost == fleet.virtualHost else { throw TopologyError(entry: entry, problem: "is in vhost \(queue.vhost), the fleet uses \(fleet.virtualHost)") }
            if let dlx = queue.arguments["x-dead-letter-exchange"]?.stringValue, !dlx.isEmpty,
               !exchangeNames.contains(dlx), !Self.builtInExchanges.contains(dlx) {
                throw TopologyError(entry: entry, problem: "dead-letters to undeclared exchange \(dlx)")
            }
        }
        for binding in bindings {
            guard exchangeNames.contains(binding.source) || (Self.builtInExchanges.contains(binding.source) && !binding.source.isEmpty) else {
                throw TopologyError(entry: binding.label, problem: "source exchange \(binding.source) is not declared")
            }
            switch binding.destinationType {
            case .queue:
                guard queueNames.contains(binding.destination) else {
                    throw TopologyError(entry: binding.label, problem: "destination queue \(binding.destination) is not declared")
                }
            case .exchange:
                guard exchangeNames.contains(binding.destination) || Self.builtInExchanges.contains(binding.destination) else {
                    throw TopologyError(entry: binding.label, problem: "destination exchange \(binding.destination) is not declared")
                }
            }
        }
        if let policy = policies.first {
            throw TopologyError(entry: "policy \(policy.name)", problem: "policies cannot be declared over AMQP; put the setting in the queues' arguments")
        }
        try validateFleet(exchangeNames: exchangeNames, queueNames: queueNames)
    }

    private func validateFleet(exchangeNames: Set<String>, queueNames: Set<String>) throws(TopologyError) {
        guard exchangeNames.contains(fleet.deadLetterExchange) else {
            throw TopologyError(entry: "fleet.dead_letter_exchange", problem: "exchange \(fleet.deadLetterExchange) is not declared")
        }
        guard queueNames.contains(fleet.deadLetterQueue) else {
            throw TopologyError(entry: "fleet.dead_letter_queue", problem: "queue \(fleet.deadLetterQueue) is not declared")
        }
        guard exchangeNames.contains(fleet.processEventsExchange) else {
            throw TopologyError(entry: "fleet.process_events_exchange", problem: "exchange \(fleet.processEventsExchange) is not declared")
        }
        guard queueNames.contains(fleet.timeoutsQueue) else {
            throw TopologyError(entry: "fleet.timeouts_queue", problem: "queue \(fleet.timeoutsQueue) is not declared")
        }
        var routed = Set<String>()
        for (index, route) in fleet.routes.enumerated() {
            let entry = "fleet.routes[\(index)] (\(route.queue))"
            guard queueNames.contains(route.queue) else { throw TopologyError(entry: entry, problem: "queue \(route.queue) is not declared") }
            guard routed.insert(route.queue).inserted else { throw TopologyError(entry: entry, problem: "the queue is routed twice") }
            guard !route.handler.isEmpty else { throw TopologyError(entry: entry, problem: "names no handler") }
            for mapping in route.foreign {
                guard !mapping.eventType.isEmpty else { throw TopologyError(entry: entry, problem: "a foreign mapping names no event type") }
                for pointer in [mapping.correlationPointer] + (mapping.messageIDPointer.map { [$0] } ?? []) + (mapping.fields.map { Array($0.values) } ?? []) {
                    guard JSONPointer(pointer) != nil else {
                        throw TopologyError(entry: entry, problem: "\(pointer) is not a JSON pointer (it must start with /)")
                    }
                }
            }
        }
        let delay = fleet.delay
        guard (1...30).contains(delay.levels) else { throw TopologyError(entry: "fleet.delay.levels", problem: "must be between 1 and 30") }
        for destination in delay.destinations where !queueNames.contains(destination) {
            throw TopologyError(entry: "fleet.delay.destinations", problem: "queue \(destination) is not declared")
        }
        guard delay.destinations.contains(fleet.timeoutsQueue) else {
            throw TopologyError(entry: "fleet.delay.destinations", problem: "must include the timeouts queue \(fleet.timeoutsQueue)")
        }
        let expected = delay.entities(virtualHost: fleet.virtualHost)
        for exchange in expected.exchanges where self.exchange(named: exchange.name) != exchange {
            throw TopologyError(entry: "exchange \(exchange.name)", problem: "the delay levels need it declared as \(exchange.type), durable; run `fleet topology render`")
        }
        for queue in expected.queues where self.queue(named: queue.name) != queue {
            throw TopologyError(entry: "queue \(queue.name)", problem: "the delay levels need it with arguments \(queue.arguments); run `fleet topology render`")
        }
        for binding in expected.bindings where !bindings.contains(binding) {
            throw TopologyError(entry: binding.label, problem: "the delay levels need this binding; run `fleet topology render`")
        }
    }

    /// Declares every exchange, queue and binding on the broker (idempotent: what exists unchanged stays).
    ///
    /// - Throws: ``AMQPError`` when the broker refuses a declaration, e.g. `.preconditionFailed` when a queue
    ///   exists with other arguments.
    public func declare(on connection: AMQPConnection) async throws(AMQPError) {
        for exchange in exchanges { try await connection.declare(exchange.declaration) }
        for queue in queues { try await connection.declare(queue.declaration) }
        for binding in bindings { try await connection.declare(binding.declaration) }
    }

    private static func explain(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { key in key.intValue.map { "[\($0)]" } ?? ".\(key.stringValue)" }.joined()
        }
        func subject(_ context: DecodingError.Context) -> String {
            let where_ = path(context)
            return where_.isEmpty ? "the file" : where_
        }
        switch error {
        case .keyNotFound(let key, let context): return "\(subject(context)) is missing \"\(key.stringValue)\""
        case .typeMismatch(let type, let context): return "\(subject(context)) should be \(type): \(context.debugDescription)"
        case .valueNotFound(let type, let context): return "\(subject(context)) needs a \(type)"
        case .dataCorrupted(let context):
            let where_ = path(context)
            return (where_.isEmpty ? "" : "\(where_): ") + "malformed JSON: \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}
