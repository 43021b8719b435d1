import AMQP
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The exchanges, queues and bindings of one virtual host as the RabbitMQ management HTTP API reports them.
public struct BrokerDefinitions: Sendable, Equatable {
    /// Exchanges, without the default and `amq.*` ones.
    public var exchanges: [Topology.Exchange]
    /// Queues.
    public var queues: [Topology.Queue]
    /// Bindings, without the default exchange's implicit ones.
    public var bindings: [Topology.Binding]

    /// Definitions.
    public init(exchanges: [Topology.Exchange], queues: [Topology.Queue], bindings: [Topology.Binding]) {
        self.exchanges = exchanges
        self.queues = queues
        self.bindings = bindings
    }

    /// Reads the live definitions of the broker and virtual host of `configuration` through the management API
    /// at `managementURL` (`http://host:15672` by default), with the broker's credentials.
    /// - Throws: ``OperationsError/Code/unreachable`` when the API does not answer, ``OperationsError/Code/notFound``
    ///   for an unknown virtual host.
    public static func fetch(configuration: AMQPConfiguration, managementURL: URL? = nil) async throws -> BrokerDefinitions {
        let base = managementURL ?? URL(string: "http://\(configuration.host):15672")!
        let vhost = configuration.virtualHost.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? configuration.virtualHost
        let credentials = Data("\(configuration.user):\(configuration.password)".utf8).base64EncodedString()
        let exchanges = try await get("/api/exchanges/\(vhost)", as: [Topology.Exchange].self, base: base, credentials: credentials, configuration: configuration)
        let queues = try await get("/api/queues/\(vhost)", as: [Topology.Queue].self, base: base, credentials: credentials, configuration: configuration)
        let bindings = try await get("/api/bindings/\(vhost)", as: [Topology.Binding].self, base: base, credentials: credentials, configuration: configuration)
        return BrokerDefinitions(
            exchanges: exchanges.filter { !$0.name.isEmpty && !$0.name.hasPrefix("amq.") }.sorted { $0.name < $1.name },
            queues: queues.sorted { $0.name < $1.name },
            bindings: bindings.filter { !$0.source.isEmpty }.sorted { $0.label < $1.label })
    }

    /// GETs `path` from the management API and decodes the answer.
    private static func get<T: Decodable>(_ path: String, as type: T.Type, base: URL, credentials: String,
                                          configuration: AMQPConfiguration) async throws -> T {
        guard let url = URL(string: base.absoluteString.trimmingSuffix("/") + path) else {
            throw OperationsError(.invalidArgument, "bad management URL \(base)")
        }
        var request = URLRequest(url: url, timeoutInterval: 15)
        request.setValue("Basic \(credentials)", forHTTPHeaderField: "Authorization")
        let data: Data, response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw OperationsError(.unreachable, "the RabbitMQ management API at \(base) does not answer (\(error.localizedDescription)); is the management plugin on?")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        switch status {
        case 200: break
        case 401: throw OperationsError(.unreachable, "the management API at \(base) refused the broker's credentials (401)")
        case 404: throw OperationsError(.notFound, "virtual host \"\(configuration.virtualHost)\" does not exist on \(base)")
        default: throw OperationsError(.unreachable, "the management API at \(base) answered \(status) for \(path)")
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw OperationsError(.unreachable, "unexpected answer from the management API for \(path): \(error)")
        }
    }

    /// The definitions as a RabbitMQ definitions file (exchanges, queues, bindings), with `fleet`, when given,
    /// added so the file is a complete topology file.
    public func encoded(fleet: FleetSection? = nil) throws -> Data {
        struct File: Encodable {
            var exchanges: [Topology.Exchange]
            var queues: [Topology.Queue]
            var bindings: [Topology.Binding]
            var policies: [Topology.Policy]
            var fleet: FleetSection?
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(File(exchanges: exchanges, queues: queues, bindings: bindings, policies: [], fleet: fleet))
    }

    /// How the live definitions differ from `topology`, virtual hosts aside.
    public func difference(from topology: Topology) -> TopologyDifference {
        var difference = TopologyDifference()
        func normalized(_ e: Topology.Exchange) -> Topology.Exchange { var e = e; e.vhost = ""; return e }
        func normalized(_ q: Topology.Queue) -> Topology.Queue { var q = q; q.vhost = ""; return q }
        func normalized(_ b: Topology.Binding) -> Topology.Binding { var b = b; b.vhost = ""; return b }

        let liveExchanges = Dictionary(exchanges.map { ($0.name, normalized($0)) }, uniquingKeysWith: { a, _ in a })
        for wanted in topology.exchanges {
            guard let live = liveExchanges[wanted.name] else { difference.missing.append("exchange \(wanted.name)"); continue }
            if live != normalized(wanted) {
                difference.changed.append("exchange \(wanted.name): file \(describe(wanted.type, wanted.durable, wanted.autoDelete, wanted.arguments)), broker \(describe(live.type, live.durable, live.autoDelete, live.arguments))")
            }
        }
        let fileExchanges = Set(topology.exchanges.map(\.name))
        difference.extra += exchanges.filter { !fileExchanges.contains($0.name) }.map { "exchange \($0.name)" }

        let liveQueues = Dictionary(queues.map { ($0.name, normalized($0)) }, uniquingKeysWith: { a, _ in a })
        for wanted in topology.queues {
            guard let live = liveQueues[wanted.name] else { difference.missing.append("queue \(wanted.name)"); continue }
            if live != normalized(wanted) {
                difference.changed.append("queue \(wanted.name): file \(describe(nil, wanted.durable, wanted.autoDelete, wanted.arguments)), broker \(describe(nil, live.durable, live.autoDelete, live.arguments))")
            }
        }
        let fileQueues = Set(topology.queues.map(\.name))
        difference.extra += queues.filter { !fileQueues.contains($0.name) }.map { "queue \($0.name)" }

        let liveBindings = bindings.map(normalized)
        let fileBindings = topology.bindings.map(normalized)
        difference.missing += fileBindings.filter { !liveBindings.contains($0) }.map(\.label)
        difference.extra += liveBindings.filter { !fileBindings.contains($0) }.map(\.label)
        return difference
    }

    private func describe(_ type: String?, _ durable: Bool, _ autoDelete: Bool, _ arguments: AMQPTable) -> String {
        let args = arguments.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return "[\([type, durable ? "durable" : "transient", autoDelete ? "auto-delete" : nil].compactMap { $0 }.joined(separator: " "))\(args.isEmpty ? "" : " " + args)]"
    }
}

/// How a live broker differs from a topology file.
public struct TopologyDifference: Sendable, Hashable, Codable {
    /// In the file, not on the broker.
    public var missing: [String] = []
    /// On the broker, not in the file.
    public var extra: [String] = []
    /// On both, declared differently.
    public var changed: [String] = []

    /// No difference.
    public init() {}

    /// Whether the broker matches the file.
    public var isEmpty: Bool { missing.isEmpty && extra.isEmpty && changed.isEmpty }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}
