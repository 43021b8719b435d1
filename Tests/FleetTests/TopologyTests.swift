import AMQP
import Fleet
import FleetTestSupport
import Foundation
import Testing

@Suite("topology.json")
struct TopologyTests {
    static let fileURL = TestBroker.repositoryRoot.appendingPathComponent("topology.json")

    static func rawFile() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: fileURL)) as! [String: Any]
    }

    /// Loads the project's topology after `change` edits its JSON.
    static func load(changing change: (inout [String: Any]) -> Void) throws -> Topology {
        var json = try rawFile()
        change(&json)
        return try Topology.decode(JSONSerialization.data(withJSONObject: json))
    }

    static func expectError(_ entry: String, containing text: String, _ change: (inout [String: Any]) -> Void) {
        do {
            _ = try load(changing: change)
            Issue.record("an invalid topology was accepted")
        } catch let error as TopologyError {
            #expect(error.entry == entry, "\(error)")
            #expect(error.problem.contains(text), "\(error)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func theProjectsTopologyIsValidAndComplete() throws {
        let topology = try Topology.load(contentsOf: Self.fileURL)
        #expect(topology.fleet.delay.levels >= 20)
        #expect(topology.fleet.delay.maximumDelaySeconds >= 12 * 24 * 3600)
        for route in topology.fleet.routes {
            let queue = try #require(topology.queue(named: route.queue))
            #expect(queue.queueType == "quorum")
            #expect(queue.arguments["x-delivery-limit"]?.intValue ?? 0 > 0, "\(route.queue) has no delivery limit")
            #expect(queue.arguments["x-dead-letter-exchange"]?.stringValue == topology.fleet.deadLetterExchange)
        }
        // Rendering again changes nothing: the file holds exactly the delay levels its fleet section describes.
        #expect(topology.renderingDelayLevels().exchanges.count == topology.exchanges.count)
        #expect(Set(topology.renderingDelayLevels().bindings.map(\.label)) == Set(topology.bindings.map(\.label)))
    }

    @Test func delayRoutingKeysSpellTheDelayInBinary() {
        let levels = DelayLevels(levels: 4, prefix: "d", deliveryExchange: "d.deliver", destinations: ["q.a"])
        #expect(levels.routingKey(delaySeconds: 0, destination: "q.a") == "0.0.0.0.q.a")
        #expect(levels.routingKey(delaySeconds: 5, destination: "q.a") == "0.1.0.1.q.a")
        #expect(levels.routingKey(delaySeconds: 15, destination: "q.a") == "1.1.1.1.q.a")
        #expect(levels.routingKey(delaySeconds: 99, destination: "q.a") == "1.1.1.1.q.a")
        #expect(levels.entryExchange == "d.level-3")
        let entities = levels.entities(virtualHost: "/")
        #expect(entities.queues.map { $0.arguments["x-message-ttl"]?.intValue } == [8000, 4000, 2000, 1000])
        #expect(entities.bindings.contains(Topology.Binding(source: "d.level-2", destination: "d.level-2.wait", routingKey: "*.1.#")))
        #expect(entities.bindings.contains(Topology.Binding(source: "d.level-2", destination: "d.level-1", destinationType: .exchange, routingKey: "*.0.#")))
        #expect(entities.bindings.contains(Topology.Binding(source: "d.level-0", destination: "d.deliver", destinationType: .exchange, routingKey: "*.*.*.0.#")))
        #expect(entities.bindings.contains(Topology.Binding(source: "d.deliver", destination: "q.a", routingKey: "*.*.*.*.q.a")))
    }

    @Test func aBindingToAnUndeclaredQueueNamesTheBinding() {
        Self.expectError("binding domain.events -> nowhere (x.#)", containing: "nowhere is not declared") { json in
            var bindings = json["bindings"] as! [[String: Any]]
            bindings.append(["source": "domain.events", "vhost": "/", "destination": "nowhere", "destination_type": "queue", "routing_key": "x.#", "arguments": [:]])
            json["bindings"] = bindings
        }
    }

    @Test func aBindingFromAnUndeclaredExchangeNamesTheBinding() {
        Self.expectError("binding ghost -> fleet.orders (k)", containing: "source exchange ghost") { json in
            var bindings = json["bindings"] as! [[String: Any]]
            bindings.append(["source": "ghost", "vhost": "/", "destination": "fleet.orders", "destination_type": "queue", "routing_key": "k", "arguments": [:]])
            json["bindings"] = bindings
        }
    }

    @Test func anUnknownQueueTypeNamesTheQueue() {
        Self.expectError("queue fleet.orders", containing: "unknown queue type") { json in
            var queues = json["queues"] as! [[String: Any]]
            let index = queues.firstIndex { $0["name"] as? String == "fleet.orders" }!
            var arguments = queues[index]["arguments"] as! [String: Any]
            arguments["x-queue-type"] = "lazy"
            queues[index]["arguments"] = arguments
            json["queues"] = queues
        }
    }

    @Test func anUnknownExchangeTypeNamesTheExchange() {
        Self.expectError("exchange process.events", containing: "unknown exchange type") { json in
            var exchanges = json["exchanges"] as! [[String: Any]]
            let index = exchanges.firstIndex { $0["name"] as? String == "process.events" }!
            exchanges[index]["type"] = "x-delayed-message"
            json["exchanges"] = exchanges
        }
    }

    @Test func aRouteToAnUndeclaredQueueNamesTheRoute() {
        Self.expectError("fleet.routes[4] (fleet.missing)", containing: "not declared") { json in
            var fleet = json["fleet"] as! [String: Any]
            var routes = fleet["routes"] as! [[String: Any]]
            routes.append(["queue": "fleet.missing", "handler": "order-fulfillment"])
            fleet["routes"] = routes
            json["fleet"] = fleet
        }
    }

    @Test func aDelayLevelWithTheWrongTTLIsCaught() {
        Self.expectError("queue fleet.delay.level-3.wait", containing: "fleet topology render") { json in
            var queues = json["queues"] as! [[String: Any]]
            let index = queues.firstIndex { $0["name"] as? String == "fleet.delay.level-3.wait" }!
            var arguments = queues[index]["arguments"] as! [String: Any]
            arguments["x-message-ttl"] = 1234
            queues[index]["arguments"] = arguments
            json["queues"] = queues
        }
    }

    @Test func aForeignMappingNeedsAJSONPointer() {
        Self.expectError("fleet.routes[2] (fleet.legacy-payments)", containing: "not a JSON pointer") { json in
            var fleet = json["fleet"] as! [String: Any]
            var routes = fleet["routes"] as! [[String: Any]]
            var foreign = routes[2]["foreign"] as! [[String: Any]]
            foreign[0]["correlation_pointer"] = "order_id"
            routes[2]["foreign"] = foreign
            fleet["routes"] = routes
            json["fleet"] = fleet
        }
    }

    @Test func malformedJSONAndMissingFieldsAreExplained() {
        #expect(throws: TopologyError.self) { try Topology.decode(Data("{\"exchanges\": [".utf8)) }
        Self.expectError("topology", containing: "missing \"type\"") { json in
            var exchanges = json["exchanges"] as! [[String: Any]]
            exchanges[0]["type"] = nil
            json["exchanges"] = exchanges
        }
        Self.expectError("topology", containing: "no \"fleet\" section") { json in json["fleet"] = nil }
    }

    @Test func policiesAreRefusedWithAReason() {
        Self.expectError("policy ha", containing: "queues' arguments") { json in
            json["policies"] = [["name": "ha", "vhost": "/", "pattern": ".*", "definition": ["max-length": 10]]]
        }
    }

    @Test func jsonPointersFindIdsInBodies() throws {
        let document = try JSONSerialization.jsonObject(with: Data(#"{"order_id":"o-1","lines":[{"sku":7}],"a/b":{"~":"x"}}"#.utf8))
        #expect(JSONPointer("/order_id")?.stringValue(in: document) == "o-1")
        #expect(JSONPointer("/lines/0/sku")?.stringValue(in: document) == "7")
        #expect(JSONPointer("/a~1b/~0")?.stringValue(in: document) == "x")
        #expect(JSONPointer("/missing")?.stringValue(in: document) == nil)
        #expect(JSONPointer("order_id") == nil)
    }

    /// `rabbitmqctl import_definitions topology.json` (the file unchanged) and the fleet's own declaration give
    /// the broker the same exchanges, queues (with their arguments) and bindings.
    @Test(.timeLimit(.minutes(5)))
    func rabbitmqImportAndTheFleetsDeclarationAgree() async throws {
        let topology = try Topology.load(contentsOf: Self.fileURL)
        try await TestBroker.sharedControl("import_definitions", Self.fileURL.path)

        let vhost = TestBroker.uniqueName("declared")
        try await TestBroker.sharedControl("add_vhost", vhost)
        do {
            try await Self.compareImportWithDeclaration(topology, vhost: vhost)
            _ = try? await TestBroker.sharedControl("delete_vhost", vhost)
        } catch {
            _ = try? await TestBroker.sharedControl("delete_vhost", vhost)
            throw error
        }
    }

    static func compareImportWithDeclaration(_ topology: Topology, vhost: String) async throws {
        try await TestBroker.sharedControl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        let connection = try await TestBroker.connect { $0.virtualHost = vhost }
        try await topology.declare(on: connection)
        await connection.close()

        let names = Set(topology.queues.map(\.name)).union(topology.exchanges.map(\.name))
        // Import is asynchronous: wait until every queue of the file exists in "/".
        let imported = try await TestBroker.eventually(30) {
            Set(try await Self.brokerState(vhost: "/", names: names).queues.map { $0.components(separatedBy: " ")[0] })
                .isSuperset(of: topology.queues.map(\.name))
        }
        #expect(imported)
        let fromImport = try await Self.brokerState(vhost: "/", names: names)
        let fromFleet = try await Self.brokerState(vhost: vhost, names: names)
        #expect(fromFleet.queues.count == topology.queues.count)
        #expect(fromFleet.exchanges.count == topology.exchanges.count)
        #expect(fromFleet.bindings.count == topology.bindings.count)
        #expect(fromImport.queues == fromFleet.queues)
        #expect(fromImport.exchanges == fromFleet.exchanges)
        #expect(fromImport.bindings == fromFleet.bindings)
    }

    /// The broker's view of the entities named in `names`, as sorted lines of text.
    static func brokerState(vhost: String, names: Set<String>) async throws -> (queues: [String], exchanges: [String], bindings: [String]) {
        func rows(_ arguments: String...) async throws -> [[String: Any]] {
            let text = try await TestBroker.sharedControl(arguments + ["-p", vhost, "--formatter", "json", "-q"])
            return try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] ?? []
        }
        func line(_ row: [String: Any], _ keys: [String]) -> String {
            keys.map { key in
                if let arguments = row[key] as? [[Any]] {
                    return arguments.map { $0.map { "\($0)" }.joined(separator: "=") }.sorted().joined(separator: ",")
                }
                return "\(row[key] ?? "")"
            }.joined(separator: " ")
        }
        let queues = try await rows("list_queues", "name", "durable", "auto_delete", "arguments")
            .filter { names.contains($0["name"] as? String ?? "") }.map { line($0, ["name", "durable", "auto_delete", "arguments"]) }.sorted()
        let exchanges = try await rows("list_exchanges", "name", "type", "durable", "auto_delete", "internal", "arguments")
            .filter { names.contains($0["name"] as? String ?? "") }.map { line($0, ["name", "type", "durable", "auto_delete", "internal", "arguments"]) }.sorted()
        let bindings = try await rows("list_bindings", "source_name", "destination_name", "destination_kind", "routing_key", "arguments")
            .filter { names.contains($0["source_name"] as? String ?? "") }.map { line($0, ["source_name", "destination_name", "destination_kind", "routing_key", "arguments"]) }.sorted()
        return (queues, exchanges, bindings)
    }
}
